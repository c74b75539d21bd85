// Headwater's runtime client for Node.js functions: a Lambda Runtime API loop, as AWS's own
// Node.js runtime runs one. It loads the handler named by _HANDLER ("index.handler": index.js,
// index.mjs or index.cjs in LAMBDA_TASK_ROOT; CommonJS or an ES module), then asks the router for
// each invocation and answers with the handler's result or error. Handlers may be async, return a
// promise, or take a callback; console output carries Lambda's timestamp, request id and level.
// A handler wrapped in awslambda.streamifyResponse gets (event, responseStream, context) and its
// response is posted in Lambda's streaming mode, each write as a chunk; an error after the stream
// began goes in the trailers. awslambda.HttpResponseStream.from writes a function URL's prelude.
import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { Writable } from "node:stream";
import { format } from "node:util";

const api = process.env.AWS_LAMBDA_RUNTIME_API;
const base = `/2018-06-01/runtime`;
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
let requestId = undefined;

function call(method, route, body, headers = {}) {
  return new Promise((resolve, reject) => {
    const [host, port] = api.split(":");
    const request = http.request({ host, port, path: base + route, method, agent, headers }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    request.on("error", reject);
    request.end(body);
  });
}

function errorObject(error) {
  if (error instanceof Error) {
    return { errorType: error.name || "Error", errorMessage: error.message,
             trace: (error.stack || "").split("\n") };
  }
  return { errorType: "Error", errorMessage: format(error), trace: [] };
}

function post(route, object, errorType) {
  const body = JSON.stringify(object === undefined ? null : object);
  const headers = { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) };
  if (errorType) headers["Lambda-Runtime-Function-Error-Type"] = errorType;
  return call("POST", route, body, headers);
}

const STREAMING = Symbol.for("aws.lambda.runtime.handler.streaming");
const ERROR_TYPE = "Lambda-Runtime-Function-Error-Type";
const ERROR_BODY = "Lambda-Runtime-Function-Error-Body";

// The response of a streaming handler: a request to /response opened at its first write (so that
// setContentType may come first), chunked, with the error trailers declared.
class ResponseStream extends Writable {
  constructor(route) {
    super();
    this.route = route;
    this.contentType = "application/octet-stream";
    this.request = null;
    this.answered = new Promise((resolve, reject) => { this.answer = { resolve, reject }; });
  }

  setContentType(type) { this.contentType = type; }

  open() {
    if (this.request) return this.request;
    const [host, port] = api.split(":");
    const headers = { "Content-Type": this.contentType, "Transfer-Encoding": "chunked",
                      "Lambda-Runtime-Function-Response-Mode": "streaming",
                      Trailer: `${ERROR_TYPE}, ${ERROR_BODY}` };
    this.request = http.request({ host, port, path: `${base}${this.route}`, method: "POST", agent, headers },
                                (res) => { res.resume(); res.on("end", () => this.answer.resolve(res.statusCode)); });
    this.request.on("error", (error) => this.answer.reject(error));
    return this.request;
  }

  _write(chunk, encoding, done) {
    // Each write leaves at once (no corking), so a caller sees it while the handler goes on.
    if (this.open().write(chunk)) done(); else this.request.once("drain", done);
  }

  _final(done) { this.open().end(); done(); }

  fail(error) {  // the handler failed: the stream ends with the error in its trailers
    const object = errorObject(error);
    const request = this.open();
    if (!request.writableEnded) {  // else it ended whole before the handler threw: nothing to say
      request.addTrailers({ [ERROR_TYPE]: object.errorType,
                            [ERROR_BODY]: Buffer.from(JSON.stringify(object)).toString("base64") });
      request.end();
    }
    return object;
  }
}

class HttpResponseStream {
  static from(stream, prelude) {
    stream.setContentType("application/vnd.awslambda.http-integration-response");
    stream.write(JSON.stringify(prelude ?? {}));
    stream.write(new Uint8Array(8));  // the end of the prelude: 8 NUL bytes
    return stream;
  }
}

globalThis.awslambda = {
  streamifyResponse(handler) { handler[STREAMING] = true; return handler; },
  HttpResponseStream,
};

async function stream(handler, event, ctx, route) {
  const response = new ResponseStream(route);
  try {
    await handler(event, response, ctx);
    if (!response.writableEnded) response.end();
    await new Promise((resolve, reject) => {
      if (response.writableFinished) resolve(); else response.on("finish", resolve).on("error", reject);
    });
  } catch (error) {
    const object = response.fail(error);
    console.error(`Invoke Error \t${JSON.stringify(object)}`);
  }
  await response.answered;
}

for (const [method, level] of [["log", "INFO"], ["info", "INFO"], ["warn", "WARN"],
                               ["error", "ERROR"], ["debug", "DEBUG"], ["trace", "TRACE"]]) {
  console[method] = (...args) => {
    const text = format(...args).replace(/\n/g, "\r");  // one record per line, as Lambda's
    process.stdout.write(`${new Date().toISOString()}\t${requestId ?? "undefined"}\t${level}\t${text}\n`);
  };
}

async function load() {
  const spec = process.env._HANDLER || "";
  const dot = spec.lastIndexOf(".");
  if (dot <= 0) throw Object.assign(new Error(`Bad handler ${spec}`), { name: "Runtime.MalformedHandlerName" });
  const [modulePath, name] = [spec.slice(0, dot), spec.slice(dot + 1)];
  const root = process.env.LAMBDA_TASK_ROOT;
  const file = [".js", ".mjs", ".cjs"].map((ext) => path.resolve(root, modulePath + ext)).find(fs.existsSync);
  if (!file) {
    throw Object.assign(new Error(`Cannot find module '${modulePath}'`), { name: "Runtime.ImportModuleError" });
  }
  let module;
  try {
    module = await import(pathToFileURL(file).href);
  } catch (error) {
    const name = error instanceof SyntaxError ? "Runtime.UserCodeSyntaxError" : "Runtime.ImportModuleError";
    throw Object.assign(new Error(`${error.name}: ${error.message}`), { name, stack: error.stack });
  }
  const handler = module[name] ?? module.default?.[name];
  if (typeof handler !== "function") {
    throw Object.assign(new Error(`${modulePath}.${name} is undefined or not exported`),
                        { name: "Runtime.HandlerNotFound" });
  }
  return handler;
}

function context(headers) {
  const deadline = Number(headers["lambda-runtime-deadline-ms"]);
  const env = process.env;
  const parse = (text) => (text ? JSON.parse(text) : undefined);
  return {
    awsRequestId: headers["lambda-runtime-aws-request-id"],
    invokedFunctionArn: headers["lambda-runtime-invoked-function-arn"],
    functionName: env.AWS_LAMBDA_FUNCTION_NAME,
    functionVersion: env.AWS_LAMBDA_FUNCTION_VERSION,
    memoryLimitInMB: env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    logGroupName: env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: env.AWS_LAMBDA_LOG_STREAM_NAME,
    clientContext: parse(headers["lambda-runtime-client-context"]),
    identity: parse(headers["lambda-runtime-cognito-identity"]),
    callbackWaitsForEmptyEventLoop: true,
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
  };
}

function run(handler, event, ctx) {
  if (handler.length >= 3) {  // (event, context, callback): the callback's answer, or the promise's
    return new Promise((resolve, reject) => {
      const done = (error, result) => (error ? reject(error) : resolve(result));
      const returned = handler(event, ctx, done);
      if (returned && typeof returned.then === "function") returned.then(resolve, reject);
    });
  }
  return Promise.resolve().then(() => handler(event, ctx));
}

let handler;
try {
  handler = await load();
} catch (error) {
  console.error(`${error.name}: ${error.message}`);
  await post("/init/error", errorObject(error), error.name);
  process.exit(1);
}

let failCurrent = null;  // an error thrown outside the handler's promise ends its invocation
process.on("uncaughtException", (error) => failCurrent?.(error, "Runtime.UncaughtException"));
process.on("unhandledRejection", (error) => failCurrent?.(error, "Runtime.UnhandledPromiseRejection"));

for (;;) {
  const next = await call("GET", "/invocation/next");
  const headers = next.headers;
  requestId = headers["lambda-runtime-aws-request-id"];
  if (headers["lambda-runtime-trace-id"]) process.env._X_AMZN_TRACE_ID = headers["lambda-runtime-trace-id"];
  else delete process.env._X_AMZN_TRACE_ID;
  const route = `/invocation/${requestId}`;
  if (handler[STREAMING]) {
    await stream(handler, JSON.parse(next.body.toString() || "null"), context(headers), `${route}/response`);
    continue;
  }
  try {
    const result = await new Promise((resolve, reject) => {
      failCurrent = (error, type) => reject(Object.assign(error instanceof Error ? error : new Error(format(error)),
                                                          { fatal: type }));
      run(handler, JSON.parse(next.body.toString() || "null"), context(headers)).then(resolve, reject);
    });
    await post(`${route}/response`, result);
  } catch (error) {
    const object = errorObject(error);
    console.error(`Invoke Error \t${JSON.stringify(object)}`);
    await post(`${route}/error`, object, error?.fatal ?? object.errorType);
    if (error?.fatal) process.exit(129);  // as Lambda's runtime, a process in that state ends
  } finally {
    failCurrent = null;
  }
}
