"""The CI files `testfleet ci` writes (the command itself is commands/ci.py): `model` is what a
file describes, `github` and `gitlab` turn it into their syntax, `yamltext` writes YAML, and
`files` renders and writes them."""
