// Runs Portkey's gateway (argv[2]: its build/start-server.js) listening on 127.0.0.1 only.
// The gateway passes no host to listen(), which would bind every interface; the benchmark
// must only touch the loopback address, so listen() is given 127.0.0.1 before it loads.
import net from "node:net";
import { pathToFileURL } from "node:url";

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === "object" && args[0] !== null) {
    args[0] = { ...args[0], host: "127.0.0.1" };
    return listen.apply(this, args);
  }
  const port = args[0];
  const callback = args.find((arg) => typeof arg === "function");
  return callback ? listen.call(this, port, "127.0.0.1", callback) : listen.call(this, port, "127.0.0.1");
};

const entry = process.argv[2];
process.argv.splice(2, 1); // the gateway reads --port= and --headless from the rest
await import(pathToFileURL(entry).href);
