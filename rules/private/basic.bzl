"""The general rules: filegroup, genrule and host_tool."""

load("@pyimg//rules:providers.bzl", "HostToolInfo")

def _filegroup_impl(ctx):
    return [DefaultInfo(files = ctx.files.srcs)]

filegroup = rule(
    implementation = _filegroup_impl,
    doc = "A named set of files: source files and the outputs of other targets.",
    attrs = {
        "srcs": attr.label_list(allow_files = True, doc = "The files of the group."),
    },
)

# Host paths a tool's data may not be or be under: the sandbox makes its own of them.
_SANDBOX_OWNED = ["/proc", "/dev", "/sys", "/pyimg"]

def _host_tool_impl(ctx):
    if not ctx.attr.path.startswith("/"):
        fail("attribute 'path' must be an absolute path, like \"/usr/bin/cc\", got %r" % ctx.attr.path)
    data = []
    for d in ctx.attr.data:
        d = d.rstrip("/") or "/"
        if not d.startswith("/"):
            fail("attribute 'data': %r must be an absolute path, like \"/usr/lib/gcc\"" % d)
        if d in ["/", "/tmp"] or [p for p in _SANDBOX_OWNED if d == p or d.startswith(p + "/")]:
            fail("attribute 'data': %r cannot be a tool's data (the sandbox makes its own)" % d)
        if d in data:
            fail("attribute 'data': %r is listed twice" % d)
        data.append(d)
    return [DefaultInfo(files = []), HostToolInfo(path = ctx.attr.path, data = data, identity = ctx.attr.identity)]

host_tool = rule(
    implementation = _host_tool_impl,
    doc = """A program of the host (a compiler, an interpreter) that genrules may use through `tools`.

A host tool is keyed by its identity: the program's bytes (after following symlinks), the
contents of its `data` paths, and with `identity = "auto"` what pyimg finds without running it
(the ELF interpreter and shared libraries ld.so loads at start, a `#!` script's interpreter, a
CPython's standard library). A change to any of them re-runs the actions that use the tool, and
`pyimg explain` names the file that changed. Its name is on the action's PATH, and the sandbox
shows the program and its data read-only at their host paths. What the tool reads beyond that
(other files of /usr, say) is not keyed: list it in `data`, or pin the build machine's image
(docs/concepts.md, "Tools are inputs").""",
    attrs = {
        "path": attr.string(mandatory = True, doc = "Absolute path of the program, e.g. `/usr/bin/cc`. A build that needs it fails at this attribute when the path does not exist."),
        "data": attr.string_list(doc = "Absolute host paths (files or directories) the program reads, e.g. `/usr/lib/gcc/x86_64-linux-gnu/12`: every file's path, bytes and executable bit, and every symlink's target, are part of the tool's identity, and each is shown in the sandbox."),
        "identity": attr.string(default = "auto", values = ["auto", "bytes"], doc = "`auto` (the default) adds to the program and its `data` what pyimg can find from the program's bytes: its ELF interpreter and shared libraries, a script's interpreter, a CPython's standard library. `bytes` keys the program's bytes and `data` only."),
    },
)

_SHELL_SAFE = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@%+=:,./-"

def _shell_quote(s):
    """`s` as one shell word: unchanged when every character is safe, else in single quotes
    (the rule of Python's shlex.quote, which `$(location)` uses too)."""
    if s and all([c in _SHELL_SAFE for c in s.elems()]):
        return s
    return "'" + s.replace("'", "'\"'\"'") + "'"

def _genrule_impl(ctx):
    outs = [ctx.actions.declare_file(o) for o in ctx.attr.outs]
    srcs = ctx.files.srcs
    tools = []
    host_tools = []
    for t in ctx.attr.tools:
        if HostToolInfo in t:
            info = t[HostToolInfo]
            host_tools.append({"path": info.path, "data": info.data, "identity": info.identity})
        else:
            tools.extend(t[DefaultInfo].files)
    cmd = ctx.attr.cmd
    # Every path is quoted for the shell where it needs it (a space, a quote, any non-ASCII
    # character), so that `cat $<` works whatever the file is called.
    subst = {
        "SRCS": " ".join([_shell_quote(f.path) for f in srcs]),
        "OUTS": " ".join([_shell_quote(f.path) for f in outs]),
        "RULEDIR": _shell_quote("pyimg-out/" + ctx.label.package if ctx.label.package else "pyimg-out"),
    }
    if len(outs) == 1:
        subst["@"] = _shell_quote(outs[0].path)
        subst["@D"] = _shell_quote(outs[0].dirname)
    else:
        subst["@D"] = subst["RULEDIR"]
    if len(srcs) == 1:
        subst["<"] = _shell_quote(srcs[0].path)
    cmd = ctx.expand_make_variables("cmd", cmd, subst)
    cmd = cmd.replace("$@", subst.get("@", "$@")).replace("$<", subst.get("<", "$<"))
    cmd = cmd.replace("$$", "$")
    ctx.actions.run_shell(
        outputs = outs,
        inputs = srcs,
        tools = tools,
        host_tools = host_tools,
        command = cmd,
        env = ctx.attr.env,
        cache_dirs = ctx.attr.cache_dirs,
        secrets = ctx.attr.secrets,
        remote_cache_secrets = ctx.attr.remote_cache_secrets,
        mnemonic = "Genrule",
        progress_message = ctx.attr.message or ("Generating " + ", ".join(ctx.attr.outs)),
    )
    return [DefaultInfo(files = outs)]

genrule = rule(
    implementation = _genrule_impl,
    doc = """Files made by a shell command, run hermetically in the sandbox.

`cmd` may use `$(SRCS)`, `$(OUTS)`, `$@` (the only output), `$<` (the only source), `$(@D)`,
`$(RULEDIR)`, `$(location LABEL)`, `$(locations LABEL)`, `$(execpath LABEL)` and `$$` for `$`.
Each path they expand to is one shell word: a path with a space, a quote or a non-ASCII
character comes in single quotes (as `shlex.quote` writes it), so do not quote them again.""",
    attrs = {
        "srcs": attr.label_list(allow_files = True, doc = "Input files, readable in the sandbox at their paths."),
        "outs": attr.string_list(mandatory = True, doc = "Output file names, relative to the package."),
        "cmd": attr.string(mandatory = True, doc = "The shell command (run by /bin/sh -c)."),
        "tools": attr.label_list(allow_files = True, doc = "Programs the command runs: targets, or `host_tool`s."),
        "env": attr.string_dict(doc = "Environment variables for the command (nothing else leaks in)."),
        "cache_dirs": attr.string_dict(doc = "Persistent read-write directories, `{ENV_VAR: name}`: in no key and no output."),
        "secrets": attr.string_list(doc = "Ids of `--secret`s the command may read through `$PYIMG_SECRET_<id>`."),
        "remote_cache_secrets": attr.bool(default = False, doc = "Cache this action remotely although it has `secrets` (never executed remotely): only its outputs and their `ActionResult` go up, under a remote key without the secrets, whose keyed hashes stay local. Only for a command whose outputs do not depend on the secret's value (a token that authenticates a download): another value gets the same remote result."),
        "message": attr.string(doc = "Progress message shown while the command runs."),
    },
)
