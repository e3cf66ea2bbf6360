# TEST DOUBLE of the few nixpkgs `lib` functions nix/module.nix uses, so the module can be
# evaluated where nixpkgs cannot be fetched (CI). It is NOT nixpkgs: types check values
# and name themselves; mkIf/mkMerge/mkDefault are resolved by `resolve` below, not by the
# module system. tests/nix/test_module.py also evaluates the module with the real nixpkgs
# lib (lib.evalModules) when KACHE_NIXPKGS_LIB names a checkout of it.
let
  inherit (builtins)
    all
    attrNames
    attrValues
    concatStringsSep
    elem
    filter
    foldl'
    isAttrs
    isBool
    isFloat
    isInt
    isList
    isString
    listToAttrs
    mapAttrs
    match
    toJSON
    typeOf
    ;

  mkType = name: check: extra: { inherit name check; _type = "type"; } // extra;
  isType = v: isAttrs v && (v._type or "") == "type";
  isOption = v: isAttrs v && (v._type or "") == "option";
  absent = { _type = "absent"; };
  lib_upper = [ "A" "B" "C" "D" "E" "F" "G" "H" "I" "J" "K" "L" "M" "N" "O" "P" "Q" "R" "S" "T" "U" "V" "W" "X" "Y" "Z" ];
  lib_lower = [ "a" "b" "c" "d" "e" "f" "g" "h" "i" "j" "k" "l" "m" "n" "o" "p" "q" "r" "s" "t" "u" "v" "w" "x" "y" "z" ];
in
rec {
  mkOption = attrs: attrs // { _type = "option"; };
  mkEnableOption = what: mkOption {
    type = types.bool;
    default = false;
    example = true;
    description = "Whether to enable ${what}.";
  };
  literalExpression = text: { _type = "literalExpression"; inherit text; };
  mkIf = condition: content: { _type = "if"; inherit condition content; };
  mkMerge = contents: { _type = "merge"; inherit contents; };
  mkDefault = content: { _type = "override"; priority = 1000; inherit content; };
  optionals = cond: list: if cond then list else [ ];
  optional = cond: x: if cond then [ x ] else [ ];
  hasPrefix = pre: s: builtins.substring 0 (builtins.stringLength pre) s == pre;
  removeSuffix =
    suf: s:
    let
      n = builtins.stringLength s;
      k = builtins.stringLength suf;
    in
    if k <= n && builtins.substring (n - k) k s == suf then builtins.substring 0 (n - k) s else s;
  optionalAttrs = cond: set: if cond then set else { };
  inherit filter concatStringsSep;
  concatLists = builtins.concatLists;
  toLower = builtins.replaceStrings (lib_upper) (lib_lower);
  escapeShellArg = arg: "'${builtins.replaceStrings [ "'" ] [ "'\\''" ] (toString arg)}'";
  getExe = pkg: "${pkg}/bin/${pkg.meta.mainProgram}";
  filterAttrsRecursive =
    pred: set:
    listToAttrs (
      map (name: {
        inherit name;
        value = let v = set.${name}; in if isAttrs v then filterAttrsRecursive pred v else v;
      }) (filter (name: pred name set.${name}) (attrNames set))
    );

  types = rec {
    bool = mkType "bool" isBool { };
    str = mkType "str" isString { };
    int = mkType "int" isInt { };
    number = mkType "number" (v: isInt v || isFloat v) { };
    package = mkType "package" (v: isAttrs v && v ? outPath) { };
    anything = mkType "anything" (_: true) { };
    nullOr = t: mkType "nullOr ${t.name}" (v: v == null || t.check v) { inner = t; };
    either = a: b: mkType "either ${a.name} ${b.name}" (v: a.check v || b.check v) { };
    enum = values: mkType "enum ${toJSON values}" (v: elem v values) { };
    strMatching = re: mkType "strMatching ${toJSON re}" (v: isString v && match re v != null) { };
    addCheck = t: f: mkType t.name (v: t.check v && f v) { };
    listOf = t: mkType "listOf ${t.name}" (v: isList v && all t.check v) { elem = t; };
    attrsOf = t: mkType "attrsOf ${t.name}" (v: isAttrs v && all t.check (attrValues v)) { elem = t; };
    ints = {
      between = lo: hi: mkType "ints.between ${toString lo} ${toString hi}" (v: isInt v && v >= lo && v <= hi) { };
      positive = mkType "ints.positive" (v: isInt v && v > 0) { };
      unsigned = mkType "ints.unsigned" (v: isInt v && v >= 0) { };
    };
    submodule = m: mkType "submodule" isAttrs { module = m; };
  };

  # --- the evaluator (double of the module system, for a module that defines no
  # values of its own options) ---------------------------------------------------------

  # Values of the options declared in `decls`, from user definitions `defs`.
  evalOptions =
    path: decls: defs: freeform:
    let
      unknown = filter (n: !(decls ? ${n})) (attrNames defs);
      extra = listToAttrs (
        map (n: {
          name = n;
          value =
            if freeform == null then
              throw "The option `${path}${n}' does not exist."
            else if freeform.check { ${n} = defs.${n}; } then
              defs.${n}
            else
              throw "The option `${path}${n}' has a value that is not TOML: ${toJSON defs.${n}}";
        }) unknown
      );
      declared = mapAttrs (
        n: d:
        if isOption d then
          evalValue "${path}${n}" d (defs.${n} or absent)
        else
          evalOptions "${path}${n}." d (defs.${n} or { }) null
      ) decls;
    in
    extra // declared;

  evalValue =
    path: opt: def:
    let
      value =
        if def == absent then
          (if opt ? default then opt.default else throw "The option `${path}' is used but not defined.")
        else
          def;
    in
    checkValue path opt.type value;

  checkValue =
    path: type: value:
    let
      inner = if type.name == "submodule" then type else (type.inner or null);
    in
    if type.name == "submodule" then
      evalOptions "${path}." (type.module.options or { }) value (type.module.freeformType or null)
    else if inner != null && inner.name == "submodule" && value != null then
      checkValue path inner value
    else if (type.elem or null) != null && type.elem.name == "submodule" && isAttrs value && type.name != "submodule" then
      mapAttrs (n: v: checkValue "${path}.${n}" type.elem v) value
    else if
      (type.inner or null) != null && (type.inner.elem or null) != null && type.inner.elem.name == "submodule" && value != null
    then
      mapAttrs (n: v: checkValue "${path}.${n}" type.inner.elem v) value
    else if type.check value then
      value
    else
      throw "A definition for option `${path}' is not of type `${type.name}'. Definition value: ${toJSON value}";

  # mkIf / mkMerge / mkDefault resolved into a plain attribute set; lists concatenate.
  resolve =
    v:
    let
      t = if isAttrs v then v._type or "" else "";
    in
    if t == "if" then
      (if v.condition then resolve v.content else absent)
    else if t == "merge" then
      foldl' merge { } (filter (x: x != absent) (map resolve v.contents))
    else if t == "override" then
      resolve v.content
    else if isAttrs v && t == "" && !(v ? outPath) && !(v ? __toString) then
      let
        resolved = mapAttrs (_: resolve) v;
      in
      filterAttrsRecursive (_: x: x != absent) resolved
    else
      v;

  merge =
    a: b:
    a
    // mapAttrs (
      n: vb:
      if !(a ? ${n}) then
        vb
      else if isAttrs a.${n} && isAttrs vb then
        merge a.${n} vb
      else if isList a.${n} && isList vb then
        a.${n} ++ vb
      else
        throw "conflicting definitions for `${n}': ${toJSON a.${n}} and ${toJSON vb}"
    ) b;

  # The declared option tree: dotted path → type name and default, for the tests.
  describe =
    prefix: decls:
    foldl' (a: b: a // b) { } (
      map (
        n:
        let
          d = decls.${n};
          p = "${prefix}${n}";
        in
        if isOption d then
          {
            ${p} = {
              type = d.type.name;
              default = if d ? default && !(isAttrs d.default && d.default ? outPath) then d.default else null;
              description = d.description or "";
            };
          }
          // (
            let
              t = if d.type.name == "submodule" then d.type else d.type.inner or d.type;
              sub = if t.name == "submodule" then t else null;
              elem = t.elem or null;
            in
            if sub != null then
              describe "${p}." (sub.module.options or { })
            else if elem != null && elem.name == "submodule" then
              describe "${p}.<name>." (elem.module.options or { })
            else
              { }
          )
        else
          describe "${p}." d
      ) (attrNames decls)
    );
}
