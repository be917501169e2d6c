// One tool loop with Vercel's ai SDK through the gateway (tests/test_coding_agents.py):
// @ai-sdk/openai speaks the Responses API by default, streamed here.
// Usage: node read_file_loop.mjs BASE_URL API_KEY MODEL PROMPT  (prints the final text)
import { readFileSync } from "node:fs";
import { jsonSchema, stepCountIs, streamText, tool } from "ai";
import { createOpenAI } from "@ai-sdk/openai";

const [baseURL, apiKey, model, prompt] = process.argv.slice(2);
const openai = createOpenAI({ baseURL, apiKey });
const result = streamText({
  model: openai(model),
  prompt,
  tools: {
    read_file: tool({
      description: "Read a text file and return its content",
      inputSchema: jsonSchema({
        type: "object",
        properties: { path: { type: "string", description: "The file's path" } },
        required: ["path"],
        additionalProperties: false,
      }),
      execute: async ({ path }) => readFileSync(path, "utf8"),
    }),
  },
  stopWhen: stepCountIs(4),
  onError: ({ error }) => {
    console.error(String(error?.stack || error));
    process.exitCode = 1;
  },
});
process.stdout.write(await result.text);
