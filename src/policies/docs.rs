//! `docs/policies.md`, rendered from the registry so the reference cannot
//! drift from what `moongate check` accepts (a test compares the committed
//! file with this rendering).

use std::fmt::Write as _;

use super::{Descriptor, Implementation, REGISTRY};

/// The whole of docs/policies.md.
pub fn render() -> String {
    let mut out = String::from(
        "# Bundled policies\n\n\
<!-- Generated from src/policies/*.rs by `policies::docs::render`; \
edit the descriptors, then run `MOONGATE_BLESS=1 cargo test --lib policies::docs`. -->\n\n\
A route lists policies in the order they run, before its own `lua.*` handlers:\n\n\
```toml\n[[route]]\npath = \"/api/\"\nupstream = \"api\"\npolicies = [\n  { use = \"request_id\" },\n  { use = \"api_key\", keys_file = \"conf.d/api-keys.txt\" },\n]\n```\n\n\
Every option is checked by `moongate check` (its type, its value, unknown and missing \
keys), with the file, line and column of the mistake.\n\n\
| policy | phases | Kong | APISIX |\n|---|---|---|---|\n",
    );
    for d in REGISTRY {
        let _ = writeln!(
            out,
            "| [`{0}`](#{0}) | {1} | {2} | {3} |",
            d.name,
            phases(d),
            or_dash(d.kong),
            or_dash(d.apisix)
        );
    }
    for d in REGISTRY {
        section(&mut out, d);
    }
    out
}

fn section(out: &mut String, d: &Descriptor) {
    let how = match d.implementation {
        Implementation::Lua(_) if d.compile.is_some() => format!(
            "Lua, `lua/policies/{0}.lua`, calling a native half in `src/policies/{0}.rs`",
            d.name
        ),
        Implementation::Lua(_) => format!("Lua, `lua/policies/{}.lua`", d.name),
        Implementation::Native(_) => "native (Rust)".to_owned(),
    };
    let _ = write!(
        out,
        "\n## {}\n\n{}\n\nPhases: {}. Implementation: {}. Kong: {}. APISIX: {}.\n\n",
        d.name,
        d.docs,
        phases(d),
        how,
        or_dash(d.kong),
        or_dash(d.apisix)
    );
    out.push_str("| option | type | default | |\n|---|---|---|---|\n");
    for o in d.options {
        let default = match (o.required, o.default) {
            (true, _) => "required".to_owned(),
            (false, Some(v)) => format!("`{v}`"),
            (false, None) => "-".to_owned(),
        };
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} |",
            o.key,
            o.kind.describe().replace('|', "\\|"),
            default,
            o.docs.replace('|', "\\|")
        );
    }
    let _ = write!(out, "\n```toml\npolicies = [\n  {},\n]\n```\n", d.example);
}

fn phases(d: &Descriptor) -> String {
    d.phases
        .iter()
        .map(|p| p.name())
        .collect::<Vec<_>>()
        .join(", ")
}

fn or_dash(name: &str) -> &str {
    if name.is_empty() { "-" } else { name }
}

#[cfg(test)]
mod tests {
    /// The committed docs/policies.md is the rendering of the registry;
    /// `MOONGATE_BLESS=1` rewrites it after a descriptor changed.
    #[test]
    fn docs_policies_md_is_rendered_from_the_registry() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/policies.md");
        let rendered = super::render();
        if std::env::var_os("MOONGATE_BLESS").is_some() {
            std::fs::write(path, &rendered).unwrap_or_else(|e| panic!("{path}: {e}"));
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == rendered,
            "docs/policies.md is out of date: run `MOONGATE_BLESS=1 cargo test --lib policies::docs`"
        );
    }
}
