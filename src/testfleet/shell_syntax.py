"""How /bin/sh reads a command's text, as far as placing a placeholder needs it.

A placeholder in a shell string never becomes its value: it becomes a reference to the
environment variable that holds the value (`"${TESTFLEET_PROJECT_DIR?}"`), and a shell takes
what a variable expands to as data, never as code. Quoting a value for the shell instead
cannot work: a value is right for one context only, and text in '...' or in a here-document
is read again later by a shell testfleet cannot see. A reference is data in every shell.

What this module decides is how the reference is written where it lands, following quotes,
`$(...)`, backticks, arithmetic, comments and here-documents as sh does:

- in a word: `"${VAR?}"`; inside "...", in arithmetic and in a here-document: `${VAR?}`, so
  the shell that runs the command expands it there as data;
- in text this shell passes on unexpanded ('...', a quoted here-document): written for the
  shell that is given the text (`sh -c '...'`, `eval '...'`, `trap '...'`, `sh <<'EOF'`),
  which expands it as data; where no shell is given the text, the reference would stay text,
  so the placeholder is refused there;
- refused where this shell would expand the value into code of another shell (`sh -c "..."`,
  `eval`, `trap`, an unquoted here-document a shell reads), where arithmetic would evaluate
  it (a value that is not a number in `$((...))`), and where the reference would not stand as
  written (after `\\` or `$`, in a here-document's delimiter).

`?` makes a shell stop, naming the variable, where a command dropped the environment
(`env -i`, sudo), rather than stand for an empty path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from testfleet.errors import ConfigError

# Programs that run their `-c` argument, or a here-document on their stdin, as shell code.
_SHELLS = frozenset(
    {"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "yash", "posh", "su", "runuser"}
    | {"$SHELL", "${SHELL}"}
)
_C_OPTION = re.compile(r"-[A-Za-z]*c[A-Za-z]*")
# Builtins whose arguments are code the shell runs.
_CODE_BUILTINS = frozenset({"eval", "trap"})
# Words before a command's name: its builtin is the next word.
_PREFIXES = frozenset(
    {"command", "builtin", "exec", "{", "!", "if", "then", "elif", "else", "do", "while", "until"}
)
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_NUMBER = re.compile(r"[+-]?[0-9]+")

# Frame kinds: where the text being read is.
PLAIN, PAREN, BACKTICK = "plain", "paren", "backtick"  # commands are read here
ARITH, SINGLE, DOUBLE, COMMENT = "arith", "single", "double", "comment"
DELIM, BODY = "delimiter", "body"  # a here-document's delimiter word; its body
_COMMANDS = (PLAIN, PAREN, BACKTICK)


@dataclass
class _HereDoc:
    delimiter: str = ""
    quoted: bool = False  # <<'EOF': the body is text this shell does not expand
    strip_tabs: bool = False  # <<-EOF
    pipeline: int = 0  # the pipeline its command is in
    shell_reader: bool = False  # a shell is in that pipeline, and may read the body


@dataclass
class _Frame:
    kind: str
    # Command frames: the simple command read so far.
    words: list[str] = field(default_factory=list)
    word: str | None = None  # the word being read; None between words
    code: str = ""  # the word being read is code that this runs ("sh -c", "eval")
    next_code: str = ""  # the next word will be
    lt: int = 0  # '<' just read: 2 is '<<', and a here-document's delimiter comes next
    fresh: bool = False  # a paren with nothing read yet: '(' now makes it `$((` arithmetic
    depth: int = 0  # arithmetic: parentheses open inside; -1: the first ')' of '))' read
    quote: str = ""  # a delimiter: the quote it is in
    text: str = ""  # a body: its current line
    inner: ShellText | None = None  # text for a shell that reads it later: that shell's view
    doc: _HereDoc = field(default_factory=_HereDoc)
    started: bool = False  # a delimiter: its first character read


class ShellText:
    """Follows sh through a template's literal text (`feed`), so that `place` can say what
    stands for a placeholder where it lands, or refuse it there."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.stack = [_Frame(PLAIN)]
        self.escaped = False  # the last character was an unconsumed backslash
        self.dollar = False  # the last character was a `$` that may start an expansion
        self.pending: list[_HereDoc] = []  # here-documents whose bodies start at the next line
        # Pipelines are numbered; those with a shell in them, which may read a here-document
        # of any of their commands (`cat <<EOF | sh`).
        self.pipeline = 0
        self.shell_pipelines: set[int] = set()

    def feed(self, text: str) -> None:
        for char in text:
            self._step(char)

    def place(self, name: str, variable: str, value: str | None) -> str:
        """The text that stands for `{name}` here; `value` is None when a config is checked
        before there are values."""
        top = self.stack[-1]
        bare = f"${{{variable}?}}"
        if top.kind == COMMENT:
            return bare
        if top.kind == SINGLE or (top.kind == BODY and top.doc.quoted):
            # Text this shell passes on as written: the reference is for the shell that is
            # given the text later, and stays literal text for any other program.
            assert top.inner is not None
            text = top.inner.place(name, variable, value)
            frame = self._command_frame()
            if top.kind == SINGLE and (frame is None or not frame.code):
                raise self._error(
                    f"{{{name}}} in single quotes stays the text {text}, which only a shell"
                    f" given that text (sh -c '...') expands; write {{{name}}} outside the"
                    f" quotes ('text '{{{name}}}' text'), or have the program read ${variable}"
                )
            if top.kind == BODY and not top.doc.shell_reader:
                raise self._error(
                    f"{{{name}}} in a quoted here-document stays the text {text}, and no shell"
                    f" reads it there; write <<{top.doc.delimiter} unquoted for the value, or"
                    f" have the program read ${variable}"
                )
            return text
        if top.kind == DELIM or top.lt == 2:
            raise self._error(
                f"{{{name}}} in a here-document's delimiter; write the delimiter as plain text"
            )
        if self.escaped:
            raise self._error(
                f"a backslash right before {{{name}}} would escape the variable testfleet puts"
                " there; remove it (testfleet passes the value safely)"
            )
        if self.dollar:
            raise self._error(
                f"'$' right before {{{name}}} makes it part of another expansion; remove the"
                f" '$' (testfleet passes the value as ${variable}), or write \\$"
            )
        if top.kind == BODY:
            if top.doc.shell_reader:
                raise self._error(
                    f"{{{name}}} is in a here-document a shell may read, which would run its"
                    f" value as code; quote the delimiter (<<'{top.doc.delimiter or 'EOF'}'),"
                    f" so that shell expands {{{name}}} as data"
                )
            return bare
        runner = next((f.code for f in self.stack if f.code and f.word is not None), "")
        if top.kind in _COMMANDS and top.word is None:  # the placeholder starts a word
            runner = runner or top.next_code or _code_builtin(top.words)
        if runner:
            raise self._error(
                f"{{{name}}} would be expanded into code that {runner} runs, where its value"
                f" could run as commands; write that code in single quotes ({runner}"
                f" '... {{{name}}} ...'), where {{{name}}} stays a reference {runner} expands"
                " as data"
            )
        if top.kind == ARITH:
            if value is not None and not _NUMBER.fullmatch(value):
                raise self._error(
                    f"{{{name}}} inside $((...)) is evaluated as arithmetic, and its value is"
                    " not a number; use it outside $((...))"
                )
            return bare
        return bare if top.kind == DOUBLE else f'"{bare}"'

    def _error(self, problem: str) -> ConfigError:
        return ConfigError(f"{self.where}: {problem}")

    # -- reading -------------------------------------------------------------------------------

    def _step(self, char: str) -> None:
        top = self.stack[-1]
        escaped, self.escaped = self.escaped, False
        dollar, self.dollar = self.dollar, False
        lt, top.lt = top.lt, 0
        fresh, top.fresh = top.fresh, False
        kind = top.kind
        if kind == COMMENT:
            if char == "\n":
                self.stack.pop()
                self._step(char)
        elif kind == SINGLE:
            self._single(top, char)
        elif kind == DELIM:
            self._delimiter(top, char, escaped)
        elif kind == BODY:
            self._body(top, char, escaped, dollar)
        elif lt == 2 and char != "<":  # `<<` read: a here-document's delimiter follows
            doc = _HereDoc(strip_tabs=char == "-", pipeline=self.pipeline)
            self.stack.append(_Frame(DELIM, doc=doc))
            if char != "-":
                self._step(char)
        elif escaped:
            if char != "\n":  # a backslash-newline joins two lines
                self._word_char(char)
        elif char == "\\":
            self.escaped = True
        elif kind == DOUBLE:
            self._double(char, dollar)
        elif kind == ARITH:
            self._arithmetic(top, char, dollar)
        elif fresh and char == "(":  # `$((`: arithmetic
            top.kind = ARITH
        else:
            self._unquoted(top, char, dollar, lt)

    def _single(self, top: _Frame, char: str) -> None:
        if char == "'":
            self.stack.pop()
            return
        assert top.inner is not None
        top.inner.feed(char)
        self._word_char(char)

    def _double(self, char: str, dollar: bool) -> None:
        if char == '"':
            self.stack.pop()
            return
        self._word_char(char)
        if char == "$":
            self.dollar = not dollar
        elif char == "(" and dollar:
            self.stack.append(_Frame(PAREN, fresh=True))
        elif char == "`":
            self.stack.append(_Frame(BACKTICK))

    def _arithmetic(self, top: _Frame, char: str, dollar: bool) -> None:
        if top.depth < 0:  # the first ')' of '))' was read
            self.stack.pop()
            if char != ")":
                self._step(char)
        elif char == "$":
            self.dollar = not dollar
        elif char == "(" and dollar:
            self.stack.append(_Frame(PAREN, fresh=True))
        elif char == "(":
            top.depth += 1
        elif char == ")":
            top.depth -= 1

    def _unquoted(self, top: _Frame, char: str, dollar: bool, lt: int) -> None:
        if char == "#" and top.word is None:
            self.stack.append(_Frame(COMMENT))
        elif char == "'":
            self._word_char("")
            self.stack.append(_Frame(SINGLE, inner=ShellText(self.where)))
        elif char == '"':
            self._word_char("")
            self.stack.append(_Frame(DOUBLE))
        elif char == "`" and top.kind == BACKTICK:
            self._end_command(top)
            self.stack.pop()
        elif char == "`":
            self._word_char("")
            self.stack.append(_Frame(BACKTICK))
        elif char == "$":
            self.dollar = not dollar
            self._word_char(char)
        elif char == "(":
            if not dollar:
                self._end_command(top)  # a subshell starts a command
            self.stack.append(_Frame(PAREN, fresh=True))
        elif char == ")" and top.kind == PAREN:
            self._end_command(top)
            self.stack.pop()
        elif char == "<":
            self._end_word(top)
            top.lt = lt + 1 if lt < 2 else 0  # `<<<` is a here-string: a plain word follows
        elif char in " \t>":
            self._end_word(top)
        elif char in ";&|)":
            self._end_command(top, pipe=char == "|")
        elif char == "\n":
            self._end_command(top)
            self._start_bodies()
        else:
            self._word_char(char)

    # -- here-documents --------------------------------------------------------------------------

    def _delimiter(self, top: _Frame, char: str, escaped: bool) -> None:
        doc = top.doc
        if escaped or (top.quote and char != top.quote):
            doc.delimiter += char
        elif top.quote:
            top.quote = ""
        elif char in " \t" and not top.started:
            return
        elif char in " \t\n;&|<>()":
            self.stack.pop()
            if top.started:
                self.pending.append(doc)
            self._step(char)
            return
        elif char == "\\":
            self.escaped = doc.quoted = True
        elif char in "'\"":
            top.quote, doc.quoted = char, True
        else:
            doc.delimiter += char
        top.started = True

    def _start_bodies(self) -> None:
        for doc in self.pending:
            doc.shell_reader = doc.pipeline in self.shell_pipelines
        if self.pending:
            self._open_body()

    def _open_body(self) -> None:
        doc = self.pending.pop(0)
        self.stack.append(
            _Frame(BODY, doc=doc, inner=ShellText(self.where) if doc.quoted else None)
        )

    def _body(self, top: _Frame, char: str, escaped: bool, dollar: bool) -> None:
        doc = top.doc
        if doc.quoted:
            assert top.inner is not None
            top.inner.feed(char)
        elif escaped:
            if char == "\n":
                return  # a backslash-newline joins two lines: no delimiter line here
        elif char == "\\":
            self.escaped = True
        elif char == "$":
            self.dollar = not dollar
        elif char == "(" and dollar:
            self.stack.append(_Frame(PAREN, fresh=True))
        elif char == "`":
            self.stack.append(_Frame(BACKTICK))
        if char != "\n":
            top.text += char
            return
        line, top.text = top.text, ""
        if (line.lstrip("\t") if doc.strip_tabs else line) == doc.delimiter:
            self.stack.pop()
            if self.pending:
                self._open_body()

    # -- words and commands ----------------------------------------------------------------------

    def _command_frame(self) -> _Frame | None:
        for frame in reversed(self.stack):
            if frame.kind in _COMMANDS:
                return frame
            if frame.kind in (ARITH, BODY):
                return None
        return None

    def _word_char(self, char: str) -> None:
        frame = self._command_frame()
        if frame is None:
            return
        if frame.word is None:
            frame.word = ""
            frame.code = frame.next_code or _code_builtin(frame.words)
            frame.next_code = ""
        frame.word += char

    def _end_word(self, frame: _Frame) -> None:
        if frame.word is None:
            return
        word, code = frame.word, frame.code
        frame.word, frame.code = None, ""
        shells = [w for w in map(_program, frame.words) if w in _SHELLS]
        if _program(word) in _SHELLS:
            self.shell_pipelines.add(self.pipeline)
        elif shells and _C_OPTION.fullmatch(word):
            frame.next_code = f"{shells[-1]} -c"
        elif code and word == "--":  # `sh -c -- '...'`: the script is the next word
            frame.next_code = code
        frame.words.append(word)

    def _end_command(self, frame: _Frame, *, pipe: bool = False) -> None:
        self._end_word(frame)
        frame.words = []
        frame.next_code = ""
        if not pipe:  # `||` counts as a pipe: a shell after it may well read the same input
            self.pipeline += 1


def _program(word: str) -> str:
    return word.rsplit("/", 1)[-1]


def _code_builtin(words: list[str]) -> str:
    """`eval` or `trap` when the command is one: its arguments are code."""
    for word in words:
        if word in _PREFIXES or _ASSIGNMENT.match(word):
            continue
        return word if word in _CODE_BUILTINS else ""
    return ""
