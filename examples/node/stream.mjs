// A streamed chat completion through Circuit Breaker with the official `openai` package.
//
//   node examples/node/stream.mjs "Write a short poem"
//
// CB_OPENAI_URL (default http://localhost:3000/v1) is the server, CB_MODEL (default gpt-4)
// the model, CB_API_KEY the client key (checked only with OPENAI_API_KEY_REQUIRED=true).
import OpenAI from 'openai';

const client = new OpenAI({
  baseURL: process.env.CB_OPENAI_URL ?? 'http://localhost:3000/v1',
  apiKey: process.env.CB_API_KEY ?? 'not-needed',
});

const prompt = process.argv.slice(2).join(' ') || 'Write a short poem';
const stream = await client.chat.completions.create({
  model: process.env.CB_MODEL ?? 'gpt-4',
  messages: [{ role: 'user', content: prompt }],
  stream: true,
  stream_options: { include_usage: true }, // one last chunk carries the token counts
});

let chunks = 0;
let usage = null;
for await (const chunk of stream) {
  const content = chunk.choices[0]?.delta?.content;
  if (content) {
    chunks += 1;
    process.stdout.write(content);
  }
  if (chunk.usage) usage = chunk.usage;
}
process.stdout.write('\n');
console.log(`-- ${chunks} content chunks${usage ? `, ${usage.completion_tokens} completion tokens` : ''}`);
