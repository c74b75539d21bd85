"""Asynchronous invocation: the durable store of Event invokes and schedule ticks, Lambda's retry
policy and its destination records."""
