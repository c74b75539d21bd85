"""Return a greeting for the name in the event: the smallest function there is."""


def handler(event, context):
    name = event.get("name", "world")
    return {"message": f"Hello, {name}!"}
