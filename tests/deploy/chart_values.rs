//! The Helm chart's values: `config` mirrors the flags of `otelscale serve` with the server's
//! defaults and `values.schema.json` describes exactly those keys; and the arguments the chart's
//! `otelscale.args` template makes of a set of values.

use std::collections::{BTreeMap, BTreeSet};

use serde_yaml::Value;

use crate::deploy_files::{read, yaml_file};
use crate::serve_flags::{serve_flags, TLS_PORTS};

pub(crate) fn chart_values() -> Value {
    yaml_file("helm/otelscale/values.yaml").remove(0)
}

pub(crate) fn chart_config(values: &Value) -> BTreeMap<String, Value> {
    let mapping = values["config"].as_mapping().expect("values.yaml has a `config` map");
    mapping
        .iter()
        .map(|(key, value)| (key.as_str().expect("config keys are strings").to_owned(), value.clone()))
        .collect()
}

/// `base` with `overrides` merged in, maps merged key by key (as `helm -f` does).
pub(crate) fn merged(base: &Value, overrides: &Value) -> Value {
    match (base, overrides) {
        (Value::Mapping(base), Value::Mapping(overrides)) => {
            let mut result = base.clone();
            for (key, value) in overrides {
                let merged_value = match result.get(key) {
                    Some(existing) => merged(existing, value),
                    None => value.clone(),
                };
                result.insert(key.clone(), merged_value);
            }
            Value::Mapping(result)
        }
        (_, overrides) => overrides.clone(),
    }
}

/// A scalar as the chart prints it; `None` for null and "".
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(text) if text.is_empty() => None,
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        other => panic!("config values are scalars, not {other:?}"),
    }
}

/// Where the chart mounts the TLS Secret of `port`.
fn tls_mount_dir(values: &Value, port: &str) -> String {
    let mount_path = values["tls"]["mountPath"].as_str().expect("values tls.mountPath");
    format!("{}/{port}", mount_path.trim_end_matches('/'))
}

/// The arguments the chart's `otelscale.args` template makes of `values`: one per set key of
/// `config` in key order (`--key=value`, a true switch as `--key`), `--snapshot-dir` for the
/// snapshot volume unless config names a directory, the TLS file flags of each port in `tls`
/// that config leaves unset, then `extraArgs`.
pub(crate) fn expected_args(values: &Value) -> Vec<String> {
    let mut config = chart_config(values);
    let snapshot_dir_set = config.get("snapshot-dir").and_then(scalar_text).is_some();
    if values["snapshots"]["enabled"].as_bool() == Some(true) && !snapshot_dir_set {
        config.insert("snapshot-dir".to_owned(), values["snapshots"]["mountPath"].clone());
    }
    for port in TLS_PORTS {
        let tls = &values["tls"][port];
        if tls["enabled"].as_bool() != Some(true) {
            continue;
        }
        let mut files = vec![("cert", "tls.crt"), ("key", "tls.key")];
        if tls["requireClientCert"].as_bool() == Some(true) {
            files.push(("client-ca", "client-ca.crt"));
        }
        for (suffix, file) in files {
            let flag = format!("{port}-tls-{suffix}");
            if config.get(&flag).and_then(scalar_text).is_none() {
                config.insert(flag, Value::String(format!("{}/{file}", tls_mount_dir(values, port))));
            }
        }
    }
    let mut args: Vec<String> = config
        .iter()
        .filter_map(|(flag, value)| match value {
            Value::Bool(true) => Some(format!("--{flag}")),
            Value::Bool(false) => None,
            other => scalar_text(other).map(|text| format!("--{flag}={text}")),
        })
        .collect();
    if let Some(extra) = values["extraArgs"].as_sequence() {
        args.extend(extra.iter().map(|arg| arg.as_str().expect("extraArgs are strings").to_owned()));
    }
    args
}

#[test]
fn every_serve_flag_is_a_chart_value_with_the_servers_default() {
    let flags = serve_flags();
    let config = chart_config(&chart_values());
    let flag_names: BTreeSet<&str> = flags.iter().map(|flag| flag.name.as_str()).collect();
    let config_keys: BTreeSet<&str> = config.keys().map(String::as_str).collect();
    let missing: Vec<_> = flag_names.difference(&config_keys).collect();
    let unknown: Vec<_> = config_keys.difference(&flag_names).collect();
    assert!(missing.is_empty(), "flags of `otelscale serve` without a key in values.yaml's config: {missing:?}");
    assert!(unknown.is_empty(), "config keys in values.yaml that are not flags of `otelscale serve`: {unknown:?}");

    for flag in &flags {
        let value = &config[&flag.name];
        match (&flag.default, flag.takes_value) {
            (_, false) => assert_eq!(value, &Value::Bool(false), "switch --{} defaults to false", flag.name),
            (Some(default), true) => assert_eq!(
                scalar_text(value).as_deref(),
                Some(default.as_str()),
                "values.yaml config.{} is not the server's default",
                flag.name
            ),
            (None, true) => assert!(value.is_null(), "--{} has no default: config.{0} should be null", flag.name),
        }
    }

    let schema: serde_json::Value = serde_json::from_str(&read("helm/otelscale/values.schema.json")).unwrap();
    let config_schema = &schema["properties"]["config"];
    assert_eq!(
        config_schema["additionalProperties"],
        serde_json::Value::Bool(false),
        "the schema refuses unknown keys"
    );
    let schema_keys: BTreeSet<&str> =
        config_schema["properties"].as_object().expect("config properties").keys().map(String::as_str).collect();
    assert_eq!(schema_keys, flag_names, "values.schema.json describes exactly the flags");
}
