//! A route's `policies = [{ use = "NAME", ... }]`: each entry checked
//! against its descriptor's schema (`crate::policies`), then the options
//! whose kind needs more than the entry to check: file options
//! (`Kind::File`, like `keys_file`) are resolved against the prefix and
//! must exist; upstream options (`Kind::Upstream`, like canary's
//! `upstream`) must name an `[upstream.NAME]` of any file.

use std::collections::BTreeMap;

use toml::Spanned;

use super::Source;
use super::paths::Paths;
use crate::config::error::ConfigError;
use crate::config::file::RawPolicy;
use crate::config::model::{Policy, Upstream};
use crate::policies::Kind;

/// The route's policies, checked, with defaults filled in and file paths
/// resolved; `upstreams` are every upstream of conf.d.
pub(super) fn policies(
    src: &Source<'_>,
    raw: Option<&Vec<Spanned<RawPolicy>>>,
    upstreams: &BTreeMap<String, Upstream>,
    paths: &mut Paths,
) -> Result<Vec<Policy>, ConfigError> {
    let mut out = Vec::new();
    for entry in raw.into_iter().flatten() {
        let place = src.place(entry.span());
        let fields = entry.get_ref();
        let descriptor = match fields.get("use").map(|u| (u, u.get_ref())) {
            Some((at, toml::Value::String(name))) => {
                crate::policies::find(name).ok_or_else(|| {
                    let message = format!(
                        "unknown policy `{name}`; bundled policies: {}",
                        crate::policies::names()
                    );
                    src.err(at.span(), message)
                })?
            }
            _ => {
                let message = format!(
                    "a policy needs `use = \"NAME\"`, one of {}",
                    crate::policies::names()
                );
                return Err(ConfigError::at(&place, message));
            }
        };
        let mut options: toml::Table = fields
            .iter()
            .filter(|(k, _)| *k != "use")
            .map(|(k, v)| (k.clone(), v.get_ref().clone()))
            .collect();
        crate::policies::schema::check_options(descriptor, &mut options).map_err(|(key, m)| {
            match key.and_then(|k| fields.get(&k)) {
                Some(value) => src.err(value.span(), m),
                None => ConfigError::at(&place, m),
            }
        })?;
        for spec in descriptor.options {
            // Only a value the entry wrote can need this: defaults of
            // these kinds would name nothing of the operator's.
            let (Some(toml::Value::String(value)), Some(at)) =
                (options.get(spec.key), fields.get(spec.key))
            else {
                continue;
            };
            match spec.kind {
                Kind::File => {
                    let at = src.place(at.span());
                    let path = paths.file(at.clone(), spec.key, value);
                    let Some(text) = path.to_str() else {
                        let message =
                            format!("`{}` {} is not UTF-8 text", spec.key, path.display());
                        return Err(ConfigError::at(&at, message));
                    };
                    options.insert(spec.key.to_owned(), toml::Value::String(text.to_owned()));
                }
                Kind::Upstream if !upstreams.contains_key(value) => {
                    let message = format!(
                        "`{}`: upstream `{value}` is not defined ({})",
                        spec.key,
                        super::route::defined_upstreams(upstreams)
                    );
                    return Err(src.err(at.span(), message));
                }
                _ => {}
            }
        }
        out.push(Policy {
            name: descriptor.name.to_owned(),
            options,
            place,
        });
    }
    acl_after_authentication(&out)?;
    Ok(out)
}

/// `acl` decides by the consumer an authentication policy recognised: one
/// listed after it on the same route would never be seen (policies run in
/// order), which is a mistake, not a choice.
fn acl_after_authentication(policies: &[Policy]) -> Result<(), ConfigError> {
    let authenticates =
        |p: &Policy| crate::policies::find(&p.name).is_some_and(|d| d.authenticates);
    let Some(acl) = policies.iter().position(|p| p.name == "acl") else {
        return Ok(());
    };
    match policies[acl..].iter().find(|p| authenticates(p)) {
        Some(auth) => Err(ConfigError::at(
            &policies[acl].place,
            format!(
                "policy `acl` runs before `{}`, which recognises the consumer it decides by: list `{}` first",
                auth.name, auth.name
            ),
        )
        .also_at(&auth.place)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::rejected as err;
    use crate::config::validate::validate;
    use crate::config::{Config, load_str};
    use std::path::{Path, PathBuf};

    fn load_in(prefix: &Path, text: &str) -> Result<Config, String> {
        validate(
            &[(PathBuf::from("t.toml"), text.to_owned())],
            prefix.to_path_buf(),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn policy_file_options_resolve_and_must_exist() {
        let p = tempfile::tempdir().unwrap();
        std::fs::create_dir(p.path().join("lua")).unwrap();
        std::fs::write(p.path().join("keys.txt"), "").unwrap();
        let at = p.path().display();
        let route = |keys_file: &str| {
            format!(
                "[[route]]\npath = \"/\"\nroot = \"lua\"\npolicies = [\n  {{ use = \"api_key\", keys_file = {keys_file} }},\n]\n"
            )
        };
        let c = load_in(p.path(), &route("\"keys.txt\"")).unwrap_or_else(|e| panic!("{e}"));
        let policy = &c.routes[0].lua.policies[0];
        assert_eq!(
            policy.options.get("keys_file").and_then(|v| v.as_str()),
            Some(format!("{at}/keys.txt").as_str())
        );
        assert!(!policy.options.contains_key("use"));
        // Missing: at the value, naming the resolved path and the reason.
        let e = load_in(p.path(), &route("\"../keys.txt\"")).unwrap_err();
        assert_eq!(
            e,
            format!("t.toml:5:34: keys_file {at}/../keys.txt: No such file or directory")
        );
        let e = load_in(p.path(), &route("3")).unwrap_err();
        assert_eq!(e, "t.toml:5:34: `keys_file`: expected file path");
    }

    #[test]
    fn policy_upstream_options_name_a_defined_upstream() {
        let conf = |upstream: &str| {
            format!(
                "[upstream.stable]\nservers = [{{ addr = \"127.0.0.1:9\" }}]\n\
                 [[route]]\npath = \"/\"\nupstream = \"stable\"\npolicies = [\n  {{ use = \"canary\", upstream = {upstream}, percentage = 5 }},\n]\n"
            )
        };
        let e = err(&conf("\"beta\""));
        assert_eq!(
            e,
            "t.toml:7:32: `upstream`: upstream `beta` is not defined (defined upstreams: stable)"
        );
        let e = err(&conf("\"\""));
        assert_eq!(e, "t.toml:7:32: `upstream`: must not be empty");
        // Defined in a later file: still found (upstreams are gathered first).
        let c = crate::config::load_files(&[
            (PathBuf::from("a.toml"), conf("\"beta\"")),
            (
                PathBuf::from("b.toml"),
                "[upstream.beta]\nservers = [{ addr = \"127.0.0.1:9\" }]\n".to_owned(),
            ),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let options = &c.routes[0].lua.policies[0].options;
        assert_eq!(
            options.get("upstream").and_then(|u| u.as_str()),
            Some("beta")
        );
    }

    #[test]
    fn policy_options_are_checked_against_their_schema_with_places() {
        let route = |entry: &str| {
            format!("[[route]]\npath = \"/\"\nroot = \"lua\"\npolicies = [\n  {entry},\n]\n")
        };
        // A value of the wrong type: at the value.
        let e = err(&route("{ use = \"ip\", allow = \"10.0.0.0/8\" }"));
        assert_eq!(e, "t.toml:5:25: `allow`: expected list of IPs / CIDRs");
        // An unknown key: at its value.
        let e = err(&route("{ use = \"request_id\", heder = \"X-Id\" }"));
        assert_eq!(
            e,
            "t.toml:5:33: unknown option `heder` for policy `request_id`; expected one of header"
        );
        // A bad value of the right type.
        let e = err(&route(
            "{ use = \"ip\", deny = [\"10.0.0.300\"], status = 200 }",
        ));
        assert_eq!(
            e,
            "t.toml:5:24: `deny`: `10.0.0.300` is not an IP address or CIDR"
        );
        let e = err(&route(
            "{ use = \"ip\", deny = [\"10.0.0.3\"], status = 200 }",
        ));
        assert_eq!(e, "t.toml:5:47: `status`: 200 is outside 400..=599");
        // Missing what the policy needs: at the entry.
        let e = err(&route("{ use = \"ip\" }"));
        assert_eq!(e, "t.toml:5:3: policy `ip`: give `allow`, `deny` or both");
        // An unknown policy: at its name.
        let e = err(&route("{ use = \"jwt_magic\" }"));
        assert!(
            e.starts_with(
                "t.toml:5:11: unknown policy `jwt_magic`; bundled policies: api_key, ip,"
            ),
            "{e}"
        );
        // Defaults are filled in for the implementation.
        let c = load_str("t.toml", &route("{ use = \"ip\", deny = [\"10.0.0.3\"] }"))
            .unwrap_or_else(|e| panic!("{e}"));
        let options = &c.routes[0].lua.policies[0].options;
        assert_eq!(
            options.get("status").and_then(|s| s.as_integer()),
            Some(403)
        );
    }
}
