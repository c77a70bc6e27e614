"""The CLI's three descriptions of itself, written from one set of option
tables: `--help` (each command's and the global one), the man page
(packaging/man/headroom.1) and the bash completion
(packaging/completion/headroom.bash). The two packaging files are what the
binary writes (`headroom __man`, `headroom __completion`); every option of
one is in the others, taking a value in each or in none; the page renders
under groff without a warning; the completion runs in bash."""

import os
import re
import shutil
import subprocess

import pytest

from conftest import REPO, cli_or_skip

PKG = os.path.join(REPO, "packaging")
MAN = os.path.join(PKG, "man", "headroom.1")
COMPLETION = os.path.join(PKG, "completion", "headroom.bash")


def run(args, env=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("HEADROOM_")}
    e.update(env or {})
    return subprocess.run(args, env=e, capture_output=True, text=True, timeout=60)


# ---- what --help says ---------------------------------------------------------

def help_text(cli, cmd=None):
    r = run([cli] + ([cmd] if cmd else []) + ["--help"])
    assert r.returncode == 0, r.stderr
    return r.stdout


def commands(cli):
    text = help_text(cli).split("\ncommands:\n")[1].split("\n\n")[0]
    return [ln.split()[0] for ln in text.splitlines()]


def help_options(cli, cmd=None):
    """{"--top": "N", "--json": None, ...}: each option of the list and the
    name of its value (None for a flag)."""
    text = help_text(cli, cmd)
    section = "\nglobal options:\n" if cmd is None else "\noptions:\n"
    body = text.split(section)[1].split("\n\n")[0]
    opts = {}
    for m in re.finditer(r"^  (--[a-z0-9-]+)(?: ([A-Z|a-z]+))?(?:  |$)", body, re.M):
        assert m.group(1) not in opts, "%s --help lists %s twice" % (cmd, m.group(1))
        opts[m.group(1)] = m.group(2)
    return opts


def test_help_lists_the_options_once_each():
    cli = cli_or_skip()
    cmds = commands(cli)
    assert cmds == ["config", "status", "watch", "history", "replay", "plan", "doctor",
                    "broker", "reserve"]
    for cmd in [None] + cmds:
        opts = help_options(cli, cmd)
        assert "--help" in opts and opts["--help"] is None, cmd
    assert help_options(cli, "history")["--db"] == "PATH"
    assert help_options(cli)["--cgroup-pid"] == "PID"
    assert "__man" not in help_text(cli)


# ---- the man page -------------------------------------------------------------

def test_packaging_files_are_what_the_binary_writes():
    cli = cli_or_skip()
    for args, path in ((["__man"], MAN), (["__completion"], COMPLETION)):
        r = run([cli] + args)
        assert r.returncode == 0, r.stderr
        with open(path) as f:
            assert f.read() == r.stdout, \
                "%s is stale: regenerate it with 'make packaging'" % os.path.relpath(path, REPO)


def man_sections(text):
    """{None: global options, "status": options, ...} from the page's source:
    each .TP entry's option and the name of its value."""
    out, where = {}, None
    for line in text.splitlines():
        if line.startswith(".SH "):
            where = None if line == ".SH GLOBAL OPTIONS" else "-"
        elif line.startswith(".SS "):
            where = line[4:]
        m = re.match(r'^\.(B|BI) \\-\\-([a-z0-9\\-]+)(?: " (.*)")?$', line)
        if m and where != "-":
            name = "--" + m.group(2).replace("\\-", "-")
            sec = out.setdefault(where, {})
            assert name not in sec, (where, name)
            sec[name] = m.group(3).replace("\\-", "-") if m.group(3) else None
    return out


def test_man_page_names_every_option_as_help_does():
    cli = cli_or_skip()
    with open(MAN) as f:
        sections = man_sections(f.read())
    cmds = commands(cli)
    assert sorted(k for k in sections if k) == sorted(cmds)
    for cmd in [None] + cmds:
        assert sections[cmd] == help_options(cli, cmd), cmd


def test_man_page_renders_without_warnings():
    groff = shutil.which("groff")
    if not groff:
        pytest.skip("groff is not installed (Debian: groff-base)")
    cli = cli_or_skip()
    r = run([groff, "-man", "-Tutf8", "-ww", "-z", MAN])
    assert r.returncode == 0 and r.stderr == "", r.stderr
    r = run([groff, "-man", "-Tascii", "-P", "-cbou", MAN])
    text = r.stdout
    for cmd in commands(cli):
        assert "\n   %s\n" % cmd in text, cmd  # a subsection per command
        for opt in help_options(cli, cmd):
            assert opt in text, (cmd, opt)
    # The help texts are the tables' own words (the page is justified: its
    # spaces are not the source's).
    words = " ".join(text.split())
    assert "history database" in words and "exporter address, or none" in words
    if shutil.which("man"):
        r = run(["man", "-l", "--warnings", "-P", "cat", MAN], env={"MANWIDTH": "80"})
        assert r.returncode == 0 and r.stderr == "", r.stderr


# ---- bash completion ------------------------------------------------------------

def complete(cli, *words):
    """Completes the last word as bash would after sourcing the script."""
    words = [cli] + list(words)
    prog = ("source %s\nCOMP_WORDS=(%s)\nCOMP_CWORD=%d\n_headroom\nprintf '%%s\\n' "
            '"${COMPREPLY[@]}"\n') % (COMPLETION, " ".join("'%s'" % w for w in words),
                                       len(words) - 1)
    r = run(["bash", "--norc", "-c", prog])
    assert r.returncode == 0 and r.stderr == "", r.stderr
    return [w for w in r.stdout.splitlines() if w]


def test_completion_is_registered_in_bash():
    cli = cli_or_skip()
    r = run(["bash", "--norc", "-c", "source %s && complete -p headroom" % COMPLETION])
    assert r.returncode == 0 and r.stdout.strip() == "complete -F _headroom headroom", \
        r.stdout + r.stderr
    assert complete(cli, "st") == ["status"]
    assert sorted(complete(cli, "")) == sorted(commands(cli) + ["help"])
    assert complete(cli, "help", "rep") == ["replay"]


def test_completion_offers_the_options_help_lists():
    """Each command's options, and the global ones, are the options --help
    lists; an option that takes a value in --help has its value completed
    (never an option offered in its place), a flag has none."""
    cli = cli_or_skip()
    for cmd in [None] + commands(cli):
        want = help_options(cli, cmd)
        before = [cmd] if cmd else []
        assert sorted(complete(cli, *before, "--")) == sorted(want), cmd
        for opt, meta in want.items():
            if opt in ("--help", "--version"):
                continue
            got = complete(cli, *before, opt, "--")
            if meta is None:
                assert sorted(got) == sorted(want), (cmd, opt)
            else:
                assert not any(w.startswith("--") for w in got), (cmd, opt, got)


def test_completion_values(tmp_path):
    cli = cli_or_skip()
    assert complete(cli, "--color", "") == ["auto", "always", "never"]
    assert complete(cli, "--root", "/", "wa") == ["watch"]
    assert complete(cli, "--cgroup-pid", "1", "--log-level", "d") == ["debug"]
    assert complete(cli, "watch", "--mode", "b") == ["balanced"]
    assert complete(cli, "plan", "--policy", "l") == ["lru", "lookahead"]
    assert complete(cli, "replay", "--backend", "") == ["sim", "host"]
    assert "--top" in complete(cli, "status", "--t")
    assert "--example" in complete(cli, "config", "--")
    (tmp_path / "d").mkdir()
    (tmp_path / "f.svg").write_text("")
    assert sorted(complete(cli, "history", "--svg", str(tmp_path) + "/")) == \
        sorted([str(tmp_path / "d"), str(tmp_path / "f.svg")])
    assert complete(cli, "--root", str(tmp_path) + "/") == [str(tmp_path / "d")]
    assert complete(cli, "watch", "--top", "") == []
    # reserve SIZE -- CMD: a program, then its own arguments.
    assert "bash" in complete(cli, "reserve", "1G", "--", "bas")
    assert complete(cli, "reserve", "1G", "--", "ls", str(tmp_path) + "/f") == \
        [str(tmp_path / "f.svg")]
