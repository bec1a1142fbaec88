"""The builtins of every BUILD and .bzl file: rule(), attr, provider(), DefaultInfo, glob(), ...

Values cross to Python only as JSON-like data, so rules and providers work like this:
- rule() and provider() ask Python for an id ("//pkg:defs.bzl%name", from the assignment on the
  calling line) and return Starlark closures; Python never holds a Starlark function.
- In a BUILD file, calling a rule registers a target with Python (name, attributes, call stack).
- At analysis, the engine evaluates a small synthetic module that loads the rule and every provider
  the target's dependencies carry, and calls `analyze(rule, providers)`. The rule closure then
  builds `ctx` from JSON that Python hands out, calls the implementation and returns its providers.
  Dependencies are dicts keyed by provider closures, so `dep[MyInfo]` works as in Bazel.
The `_pyimg_*` functions are Python callables added by pyimg.loading.loader. Large values cross
as one JSON string (json.encode/json.decode run natively): starlark-pyo3 converts other values
one by one, which costs seconds for a pkg_tar of ten thousand files.
"""

def _attr(type, default = None, mandatory = False, doc = "", allow_files = None, allow_single_file = None, values = None, executable = False, cfg = None, providers = None):
    if cfg != None and cfg not in ("platforms", "target", "exec", "host"):
        fail("attr cfg must be \"platforms\" (one dependency per platform of the target's `platforms` attribute) or \"target\", got %r" % cfg)
    return {
        "cfg": "platforms" if cfg == "platforms" else None,
        "type": type,
        "default": default,
        "mandatory": mandatory,
        "doc": doc,
        "allow_files": allow_files if allow_files != None else allow_single_file,
        "single_file": allow_single_file != None and allow_single_file != False,
        "values": values,
        "executable": executable,
    }

def _attr_label(default = None, mandatory = False, doc = "", allow_files = None, allow_single_file = None, executable = False, cfg = None, providers = None):
    return _attr("label", default, mandatory, doc, allow_files, allow_single_file, None, executable, cfg)

def _attr_label_list(default = [], mandatory = False, doc = "", allow_files = None, allow_empty = True, providers = None, cfg = None):
    return _attr("label_list", default, mandatory, doc, allow_files, cfg = cfg)

def _attr_label_keyed_string_dict(default = {}, mandatory = False, doc = "", allow_files = None):
    return _attr("label_keyed_string_dict", default, mandatory, doc, allow_files)

def _attr_string(default = "", mandatory = False, doc = "", values = None):
    return _attr("string", default, mandatory, doc, values = values)

def _attr_string_list(default = [], mandatory = False, doc = "", allow_empty = True):
    return _attr("string_list", default, mandatory, doc)

def _attr_string_dict(default = {}, mandatory = False, doc = "", allow_empty = True):
    return _attr("string_dict", default, mandatory, doc)

def _attr_string_list_dict(default = {}, mandatory = False, doc = ""):
    return _attr("string_list_dict", default, mandatory, doc)

def _attr_int(default = 0, mandatory = False, doc = "", values = None):
    return _attr("int", default, mandatory, doc, values = values)

def _attr_bool(default = False, mandatory = False, doc = ""):
    return _attr("bool", default, mandatory, doc)

attr = struct(
    label = _attr_label,
    label_list = _attr_label_list,
    label_keyed_string_dict = _attr_label_keyed_string_dict,
    string = _attr_string,
    string_list = _attr_string_list,
    string_dict = _attr_string_dict,
    string_list_dict = _attr_string_list_dict,
    int = _attr_int,
    bool = _attr_bool,
)

def provider(doc = "", fields = None, init = None):
    """Declares a provider; must be assigned to a top-level name (`MyInfo = provider(...)`)."""
    pid = _pyimg_new_provider(doc = doc, fields = fields, stack = call_stack())
    field_names = None
    if type(fields) == "list":
        field_names = fields
    elif type(fields) == "dict":
        field_names = list(fields.keys())

    def _make(**kwargs):
        if field_names != None:
            for k in kwargs:
                if k not in field_names:
                    fail("provider %s has no field '%s' (fields: %s)" % (pid, k, ", ".join(field_names)))
        values = {k: None for k in (field_names or [])}
        values.update(kwargs)
        return struct(_provider = pid, **values)

    return _make

DefaultInfo = provider(
    doc = "The files a target makes; `files` is a list of File.",
    fields = ["files", "runfiles", "executable"],
)

def rule(implementation, attrs = {}, doc = "", executable = False, test = False, outputs = None, provides = [], fragments = []):
    """Declares a rule; must be assigned to a top-level name (`my_rule = rule(...)`).

    `fragments = ["platform"]`: the implementation reads the target platform
    (`ctx.fragments.platform.platform`), so the target is analysed once per platform."""
    rid = _pyimg_new_rule(attrs = attrs, doc = doc, executable = executable, fragments = fragments, stack = call_stack())

    def _rule(name = None, pyimg_analysis__ = None, **kwargs):
        if pyimg_analysis__ != None:
            return _analyze(implementation, pyimg_analysis__)
        _pyimg_register_target(rule = rid, name = name, attrs = json.encode(kwargs), stack = call_stack())

    return _rule

# -- analysis --------------------------------------------------------------------------------

def _file(data):
    path = data["path"]
    slash = path.rfind("/")
    basename = path[slash + 1:]
    dot = basename.rfind(".")
    return struct(
        path = path,
        short_path = path[len("pyimg-out/"):] if path.startswith("pyimg-out/") else path,
        basename = basename,
        dirname = path[:slash] if slash >= 0 else "",
        extension = basename[dot + 1:] if dot >= 0 else "",
        is_source = data["is_source"],
        is_directory = data["is_directory"],
        owner = data["owner"],
        _file = True,
    )

def _rebuild(value, providers):
    """JSON from Python -> Starlark values: File structs, provider instances, target dicts."""
    t = type(value)
    if t == "list":
        return [_rebuild(v, providers) for v in value]
    if t != "dict":
        return value
    if value.get("_file") == True:
        return _file(value)
    if "_target" in value:
        target = {"label": value["_target"]}
        for pid, fields in value["providers"].items():
            target[providers[pid]] = _rebuild(fields, providers)
        return target
    if "_provider" in value:
        return struct(**{k: _rebuild(v, providers) for k, v in value.items()})
    return {k: _rebuild(v, providers) for k, v in value.items()}

def _declare_file(filename, sibling = None):
    return _file(_pyimg_declare(filename = filename, directory = False, sibling = sibling, stack = call_stack()))

def _declare_directory(filename, sibling = None):
    return _file(_pyimg_declare(filename = filename, directory = True, sibling = sibling, stack = call_stack()))

def _write(output, content, is_executable = False, mnemonic = "FileWrite", progress_message = None):
    _pyimg_action(
        spec = json.encode(dict(
            kind = "write",
            outputs = [output],
            params = {"content": content, "executable": is_executable},
            mnemonic = mnemonic,
            progress_message = progress_message,
        )),
        stack = call_stack(),
    )

def _run(outputs, inputs = [], executable = None, tools = [], arguments = [], env = {}, mnemonic = "Action", progress_message = None, cache_dirs = {}, secrets = [], host_tools = [], remote_cache_secrets = False):
    _pyimg_action(
        spec = json.encode(dict(
            kind = "run",
            outputs = outputs,
            inputs = inputs,
            executable = executable,
            tools = tools,
            arguments = arguments,
            env = env,
            mnemonic = mnemonic,
            progress_message = progress_message,
            cache_dirs = cache_dirs,
            secrets = secrets,
            host_tools = host_tools,
            remote_cache_secrets = remote_cache_secrets,
        )),
        stack = call_stack(),
    )

def _run_shell(outputs, command, inputs = [], tools = [], arguments = [], env = {}, mnemonic = "Action", progress_message = None, cache_dirs = {}, secrets = [], host_tools = [], remote_cache_secrets = False):
    _run(
        outputs = outputs,
        inputs = inputs,
        executable = "/bin/sh",
        tools = tools,
        arguments = ["-c", command] + arguments,
        env = env,
        mnemonic = mnemonic,
        progress_message = progress_message,
        cache_dirs = cache_dirs,
        secrets = secrets,
        host_tools = host_tools,
        remote_cache_secrets = remote_cache_secrets,
    )

def _builtin(kind, params, outputs, inputs = [], mnemonic = None, progress_message = None):
    _pyimg_action(
        spec = json.encode(dict(
            kind = "builtin",
            builtin = kind,
            params = params,
            outputs = outputs,
            inputs = inputs,
            mnemonic = mnemonic or kind,
            progress_message = progress_message,
        )),
        stack = call_stack(),
    )

_ACTIONS = struct(
    declare_file = _declare_file,
    declare_directory = _declare_directory,
    write = _write,
    run = _run,
    run_shell = _run_shell,
    builtin = _builtin,
)

def _analyze(implementation, providers):
    data = json.decode(_pyimg_ctx_data())
    attr = {}
    file = {}
    files = {}
    for name, value in data["attrs"].items():
        attr[name] = _rebuild(value, providers)
    for name, kind in data["files"].items():
        value = attr[name]
        if kind == "label":
            targets = [value] if value != None else []
        elif kind == "label_keyed_string_dict":
            targets = [pair[0] for pair in value]
            attr[name] = _keyed_by_targets(value)
        else:
            targets = value
        files[name] = [f for t in targets for f in t[DefaultInfo].files]
    for name in data["file"]:
        file[name] = files[name][0] if files[name] else None
    ctx = struct(
        label = data["label"],
        workspace_name = "",
        attr = struct(**attr),
        file = struct(**file),
        files = struct(**files),
        executable = struct(**file),
        actions = _ACTIONS,
        bin_dir = struct(path = "pyimg-out"),
        expand_location = _expand_location,
        expand_make_variables = _expand_make_variables,
        # Bazel has the same field (a label there): here the OCI platform of the running
        # machine, like "linux/arm64/v8".
        # `platform`, the configuration's target platform, only for rules that declare
        # `fragments = ["platform"]`: the others are analysed once for every platform.
        fragments = struct(platform = _platform_fragment(data)),
    )
    returned = implementation(ctx)
    if returned == None:
        returned = []
    if type(returned) != "list":
        returned = [returned]
    return returned

def _platform_fragment(data):
    if "platform" in data:
        return struct(host_platform = data["host_platform"], platform = data["platform"], platform_requested = data["platform_requested"])
    return struct(host_platform = data["host_platform"])

def _keyed_by_targets(pairs):
    """A label_keyed_string_dict's value: Bazel gives a dict keyed by Target, but targets are
    dicts here, which Starlark cannot hash; this answers items(), keys() and values() alike."""

    def _items():
        return [(target, value) for target, value in pairs]

    def _keys():
        return [pair[0] for pair in pairs]

    def _values():
        return [pair[1] for pair in pairs]

    return struct(items = _items, keys = _keys, values = _values)

def _expand_location(text, targets = [], short_paths = False):
    return _pyimg_expand(text = text, stack = call_stack())

def _expand_make_variables(attribute_name, command, additional_substitutions = {}):
    return _pyimg_expand(text = command, extra = additional_substitutions, stack = call_stack())

def analyze(rule_fn, providers):
    """Entry point of the synthetic analysis module (see the module docstring)."""
    return rule_fn(pyimg_analysis__ = providers)

# -- loading-phase builtins -------------------------------------------------------------------

def glob(include = [], exclude = [], exclude_directories = 1, allow_empty = True):
    return json.decode(_pyimg_glob(include = include, exclude = exclude, allow_empty = allow_empty, stack = call_stack()))

def package(default_visibility = None, **kwargs):
    _pyimg_package(default_visibility = default_visibility, stack = call_stack())

def package_name():
    return _pyimg_package_name()

def repository_name():
    return "@"

def select(conditions, no_match_error = ""):
    return _pyimg_select(conditions = conditions, no_match_error = no_match_error, stack = call_stack())

def exports_files(srcs, visibility = None, licenses = None):
    pass

def existing_rules():
    return _pyimg_existing_rules()

def Label(text):
    """A label, as the canonical string `//pkg:name` (`@repo//pkg:name`); its fields read
    through pyimg_attr__ (see below)."""
    return _pyimg_label(text = text, stack = call_stack())

def depset(direct = None, order = "default", transitive = None):
    """Bazel's depset, as a plain list without duplicates (direct first, then transitive in
    order): pyimg's DefaultInfo.files is a list, and `to_list()` works on it (pyimg_attr__)."""
    out = []
    seen = {}
    for items in [direct or []] + (transitive or []):
        for item in items:
            key = item.path if type(item) == "struct" and hasattr(item, "_file") else item
            if key not in seen:
                seen[key] = True
                out.append(item)
    return out

def _label_field(label, field):
    repo = ""
    rest = label
    if label.startswith("@"):
        i = label.find("//")
        repo = label[1:i]
        rest = label[i:]
    package, _, name = rest[2:].partition(":")
    if field == "name":
        return name
    if field == "package":
        return package
    return repo  # workspace_name, repo_name

def pyimg_attr__(value, field):
    """`value.field` where a file says `X.label`, `X.name`, `X.package`, `X.workspace_name`,
    `X.repo_name` or `X.to_list`: pyimg rewrites those reads into calls of this function
    (pyimg.loading._eval.rewrite_label_fields), so that a label string has Bazel's Label fields,
    a target dict has `.label`, and a list (a depset here) has `to_list()`. Any other value's
    attribute is read as Starlark reads it, with the same error when it has none."""
    t = type(value)
    if t == "string" and field != "label" and field != "to_list" and (value.startswith("//") or value.startswith("@")):
        return _label_field(value, field)
    if t == "dict" and field == "label" and "label" in value:
        return value["label"]
    if t == "list" and field == "to_list":
        def _to_list():
            return list(value)

        return _to_list
    return getattr(value, field)

native = struct(
    glob = glob,
    package_name = package_name,
    repository_name = repository_name,
    existing_rules = existing_rules,
    exports_files = exports_files,
)
