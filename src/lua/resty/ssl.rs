//! `ngx.ssl`: the parts that need no nginx TLS connection. `parse_pem_cert`
//! (a certificate chain) and `parse_pem_priv_key` return an opaque
//! userdata standing for OpenSSL's `X509` chain / `EVP_PKEY` (it can only
//! be passed back to functions moongate does not offer, or inspected with
//! `tostring`); `cert_pem_to_der` and `priv_key_pem_to_der` convert. The
//! functions that act on the connection being handshaken (`set_cert`,
//! `server_name`, `get_tls1_version` …) need nginx's `ssl_certificate_by_lua`
//! phase, which moongate has not (its TLS is rustls, configured per
//! listener): they raise "ngx.ssl.NAME is not supported in moongate".

use mlua::{Lua, LuaString, MultiValue, Table, UserData, UserDataMethods, Value};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The functions lua-resty-core's `ngx.ssl` has that need a TLS handshake
/// in progress.
const UNSUPPORTED: [&str; 22] = [
    "clear_certs",
    "set_der_cert",
    "set_der_priv_key",
    "raw_server_addr",
    "server_port",
    "server_name",
    "raw_client_addr",
    "parse_der_cert",
    "parse_der_priv_key",
    "set_cert",
    "set_priv_key",
    "verify_client",
    "export_keying_material",
    "export_keying_material_early",
    "get_req_ssl_pointer",
    "get_upstream_ssl_pointer",
    "ssl_session_reused",
    "get_client_random",
    "get_server_random",
    "get_session_master_key",
    "get_tls1_version",
    "get_tls1_version_str",
];

/// A parsed certificate chain (DER, leaf first).
struct CertChain(Vec<Vec<u8>>);

/// A parsed private key (DER).
struct PrivKey(#[allow(dead_code)] Vec<u8>);

impl UserData for CertChain {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_meta_method("__tostring", |_, this, ()| {
            Ok(format!(
                "cdata<void *>: X509 chain ({} certs)",
                this.0.len()
            ))
        });
    }
}

impl UserData for PrivKey {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_meta_method("__tostring", |_, _, ()| Ok("cdata<void *>: EVP_PKEY"));
    }
}

/// The certificates of a PEM text, or ngx_lua's error.
fn certs(pem: &[u8]) -> Result<Vec<Vec<u8>>, &'static str> {
    let chain: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(pem)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|_| "PEM_read_bio_X509_AUX() failed")?;
    if chain.is_empty() {
        return Err("PEM_read_bio_X509_AUX() failed");
    }
    Ok(chain)
}

/// The private key of a PEM text, or ngx_lua's error.
fn priv_key(pem: &[u8]) -> Result<Vec<u8>, &'static str> {
    PrivateKeyDer::from_pem_slice(pem)
        .map(|k| k.secret_der().to_vec())
        .map_err(|_| "PEM_read_bio_PrivateKey() failed")
}

fn answer(lua: &Lua, r: Result<Value, &'static str>) -> mlua::Result<(Value, Value)> {
    match r {
        Ok(v) => Ok((v, Value::Nil)),
        Err(e) => Ok((Value::Nil, Value::String(lua.create_string(e)?))),
    }
}

/// Registers `ngx.ssl` in `preload`.
pub(super) fn install(lua: &Lua, preload: &Table) -> mlua::Result<()> {
    preload.set(
        "ngx.ssl",
        lua.create_function(|lua, _: MultiValue| {
            let m = lua.create_table()?;
            m.set("version", "0.1.28")?;
            for (name, v) in [
                ("SSL3_VERSION", 0x0300),
                ("TLS1_VERSION", 0x0301),
                ("TLS1_1_VERSION", 0x0302),
                ("TLS1_2_VERSION", 0x0303),
                ("TLS1_3_VERSION", 0x0304),
            ] {
                m.set(name, v)?;
            }
            m.set(
                "parse_pem_cert",
                lua.create_function(|lua, pem: LuaString| {
                    let r = certs(&pem.as_bytes()).and_then(|c| {
                        lua.create_userdata(CertChain(c))
                            .map(Value::UserData)
                            .map_err(|_| "no memory")
                    });
                    answer(lua, r)
                })?,
            )?;
            m.set(
                "parse_pem_priv_key",
                lua.create_function(|lua, pem: LuaString| {
                    let r = priv_key(&pem.as_bytes()).and_then(|k| {
                        lua.create_userdata(PrivKey(k))
                            .map(Value::UserData)
                            .map_err(|_| "no memory")
                    });
                    answer(lua, r)
                })?,
            )?;
            m.set(
                "cert_pem_to_der",
                lua.create_function(|lua, pem: LuaString| {
                    let r = certs(&pem.as_bytes()).and_then(|c| {
                        lua.create_string(c.concat())
                            .map(Value::String)
                            .map_err(|_| "no memory")
                    });
                    answer(lua, r)
                })?,
            )?;
            m.set(
                "priv_key_pem_to_der",
                lua.create_function(|lua, (pem, _pass): (LuaString, Value)| {
                    let r = priv_key(&pem.as_bytes()).and_then(|k| {
                        lua.create_string(k)
                            .map(Value::String)
                            .map_err(|_| "no memory")
                    });
                    answer(lua, r)
                })?,
            )?;
            // Raised from Lua, so that `pcall` gives the plain message.
            let raising = lua
                .load(
                    "local name = ... return function() \
                     error('ngx.ssl.' .. name .. ' is not supported in moongate', 2) end",
                )
                .set_name("=ngx.ssl")
                .into_function()?;
            for name in UNSUPPORTED {
                m.set(name, raising.call::<mlua::Function>(name)?)?;
            }
            Ok(m)
        })?,
    )
}
