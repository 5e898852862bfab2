//! Reading `deploy/` and walking its Kubernetes objects: paths, YAML streams, the plain
//! manifests, a Deployment's container and the Secret files its volumes project, trigger
//! metadata; and the check that every YAML and JSON file under `deploy/` parses.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml::Value;

/// The Service address the examples point at: release `otelscale` in namespace `otelscale`.
pub(crate) const SERVICE_HOST: &str = "otelscale.otelscale.svc";

pub(crate) fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn deploy_path(relative: &str) -> PathBuf {
    repo_root().join("deploy").join(relative)
}

pub(crate) fn read(relative: &str) -> String {
    let path = deploy_path(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

fn files_under(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, found);
        } else {
            found.push(path);
        }
    }
    found.sort();
}

pub(crate) fn files_with_extension(relative_dir: &str, extensions: &[&str]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    files_under(&deploy_path(relative_dir), &mut files);
    files.retain(|path| path.extension().is_some_and(|ext| extensions.iter().any(|wanted| ext == *wanted)));
    files
}

/// Every document of a YAML stream, empty ones (only comments) left out.
pub(crate) fn yaml_documents(text: &str) -> Result<Vec<Value>, serde_yaml::Error> {
    let documents: Vec<Value> =
        serde_yaml::Deserializer::from_str(text).map(Value::deserialize).collect::<Result<_, _>>()?;
    Ok(documents.into_iter().filter(|document| !document.is_null()).collect())
}

pub(crate) fn yaml_file(relative: &str) -> Vec<Value> {
    yaml_documents(&read(relative)).unwrap_or_else(|err| panic!("deploy/{relative}: {err}"))
}

/// As JSON, whose objects compare without regard to key order.
pub(crate) fn json(value: &Value) -> serde_json::Value {
    serde_json::to_value(value).expect("YAML value as JSON")
}

pub(crate) fn of_kind<'a>(documents: &'a [Value], kind: &str) -> Vec<&'a Value> {
    documents.iter().filter(|document| document["kind"].as_str() == Some(kind)).collect()
}

pub(crate) fn the_one<'a>(documents: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(documents, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, found {}", found.len());
    found[0]
}

pub(crate) fn plain_manifests() -> Vec<Value> {
    yaml_file("kubernetes/otelscale.yaml")
}

pub(crate) fn container(deployment: &Value) -> &Value {
    let containers = deployment["spec"]["template"]["spec"]["containers"].as_sequence().unwrap();
    assert_eq!(containers.len(), 1);
    &containers[0]
}

pub(crate) fn string_list(value: &Value) -> Vec<String> {
    value.as_sequence().unwrap().iter().map(|item| item.as_str().unwrap().to_owned()).collect()
}

/// Container port numbers by name.
pub(crate) fn container_ports(container: &Value) -> BTreeMap<String, u64> {
    container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|port| (port["name"].as_str().unwrap().to_owned(), port["containerPort"].as_u64().unwrap()))
        .collect()
}

/// The files the Deployment's projected Secret volumes put into the container: absolute path
/// to (Secret name, key). Checks that those volumes are mounted read-only and whole (a
/// `subPath` mount is not updated when the Secret changes).
pub(crate) fn mounted_secret_files(deployment: &Value) -> BTreeMap<String, (String, String)> {
    let no_volumes = Vec::new();
    let volumes = deployment["spec"]["template"]["spec"]["volumes"].as_sequence().unwrap_or(&no_volumes);
    let mut files = BTreeMap::new();
    for mount in container(deployment)["volumeMounts"].as_sequence().into_iter().flatten() {
        let name = mount["name"].as_str().unwrap();
        let volume = volumes
            .iter()
            .find(|volume| volume["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("volumeMount {name} without a volume"));
        let Some(sources) = volume["projected"]["sources"].as_sequence() else { continue };
        assert_eq!(mount["readOnly"].as_bool(), Some(true), "{name} is mounted read-only");
        assert!(mount.get("subPath").is_none(), "{name}: a subPath mount does not follow Secret updates");
        let dir = mount["mountPath"].as_str().unwrap();
        for source in sources {
            let secret = source["secret"]["name"].as_str().unwrap_or_else(|| panic!("{name}: not a Secret source"));
            for item in source["secret"]["items"].as_sequence().unwrap() {
                let path = format!("{dir}/{}", item["path"].as_str().unwrap());
                let key = item["key"].as_str().unwrap().to_owned();
                assert!(files.insert(path.clone(), (secret.to_owned(), key)).is_none(), "{path} is projected twice");
            }
        }
    }
    files
}

/// The value of `--<flag>=<value>` in `args`.
pub(crate) fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let prefix = format!("--{flag}=");
    args.iter().find_map(|arg| arg.strip_prefix(prefix.as_str()))
}

#[test]
fn every_yaml_and_json_file_under_deploy_parses() {
    let mut parsed = 0;
    let mut templates = 0;
    for path in files_with_extension("", &["yaml", "yml"]) {
        let text = std::fs::read_to_string(&path).unwrap();
        let is_template = path.components().any(|part| part.as_os_str() == "templates");
        if is_template && text.contains("{{") {
            // Go templates: YAML only once rendered (checked through render.py below).
            templates += 1;
            continue;
        }
        let documents = yaml_documents(&text).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        assert!(!documents.is_empty(), "{} holds no document", path.display());
        parsed += 1;
    }
    for path in files_with_extension("", &["json"]) {
        let text = std::fs::read_to_string(&path).unwrap();
        serde_json::from_str::<serde_json::Value>(&text).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        parsed += 1;
    }
    assert!(parsed >= 14, "only {parsed} files parsed");
    assert!(templates >= 6, "only {templates} chart templates found");
}

/// KEDA passes trigger metadata as a map of strings.
pub(crate) fn trigger_metadata(trigger: &Value, context: &str) -> HashMap<String, String> {
    trigger["metadata"]
        .as_mapping()
        .unwrap_or_else(|| panic!("{context}: trigger without metadata"))
        .iter()
        .map(|(key, value)| {
            let key = key.as_str().unwrap().to_owned();
            let value = value.as_str().unwrap_or_else(|| panic!("{context}: metadata `{key}` must be a string"));
            (key, value.to_owned())
        })
        .collect()
}
