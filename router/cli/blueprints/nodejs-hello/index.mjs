// Greets whoever the event names: a Node.js function (runtime nodejsNN.x, handler index.handler).
// An ES module; a CommonJS index.js with exports.handler works the same.
let invocations = 0; // module state lives as long as the warm worker

export const handler = async (event, context) => {
  invocations += 1;
  const name = event?.name ?? "world";
  console.log(`greeting ${name} (${context.awsRequestId})`);
  return { message: `Hello, ${name}!`, invocations };
};
