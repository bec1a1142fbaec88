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

def _host_tool_impl(ctx):
    if not ctx.attr.path.startswith("/"):
        fail("attribute 'path' must be an absolute path, like \"/usr/bin/cc\", got %r" % ctx.attr.path)
    return [DefaultInfo(files = []), HostToolInfo(path = ctx.attr.path)]

host_tool = rule(
    implementation = _host_tool_impl,
    doc = """A program of the host (a compiler, say) that genrules may use through `tools`.

The program's bytes (after following symlinks) are part of the key of every action that uses it,
and its name is on the action's PATH. What the program itself reads from the host (headers,
libraries) is not tracked: pin the build machine's image when that matters.""",
    attrs = {
        "path": attr.string(mandatory = True, doc = "Absolute path of the program, e.g. `/usr/bin/cc`. A build that needs it fails at this attribute when the path does not exist."),
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
            host_tools.append(t[HostToolInfo].path)
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
        "message": attr.string(doc = "Progress message shown while the command runs."),
    },
)
