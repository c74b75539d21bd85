# The handler of the provided-shell blueprint ("function.handler"): the event is $1, the response
# what it prints.
handler() {
  NAME="$(printf '%s' "$1" | sed -n 's/.*"name"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p')"
  echo "greeting ${NAME:-world}" >&2
  printf '{"message": "Hello, %s!"}' "${NAME:-world}"
}
