// The Node.js example: greets whoever the event names (runtime nodejs20.x, handler index.handler).
const greeting = process.env.GREETING ?? "hello";
let invocations = 0; // module state survives between invocations of one warm worker

export const handler = async (event, context) => {
  invocations += 1;
  const name = event?.name ?? "world";
  console.log(`greeting ${name}`);
  return { message: `${greeting}, ${name}!`, request_id: context.awsRequestId,
           invocations_of_this_worker: invocations };
};
