//! What `apphost publish` writes, as snapshots: the demo stack's compose
//! file and env files with fixed passwords, so any change to the output is
//! a reviewed diff, and what it refuses.

use std::path::Path;

use miette::{GraphicalReportHandler, GraphicalTheme};

use super::{compose, project_image, stack};
use crate::topology;

/// Fixed stand-ins for the generated passwords.
fn password(name: &str) -> Option<String> {
    Some(format!("secret-of-{name}"))
}

fn compose_files(file: &Path) -> super::Files {
    let t = topology::load(file).unwrap();
    let stack = stack(&t, &password).unwrap();
    compose::render(&t, &stack, &|i| project_image(&t.name, &i.resource.name, "test"))
}

#[test]
fn the_demo_stack_as_compose() {
    let files = compose_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("apphost.yaml"));
    let (compose, private) = &files["compose.yaml"];
    assert!(!private);
    assert!(!compose.contains("secret-of-"), "no password inline:\n{compose}");
    assert!(!compose.contains("version:"), "the Compose Specification has no version key");
    insta::assert_snapshot!("demo_compose", compose);
    let env_files: Vec<_> = files.iter().filter(|(name, _)| name.ends_with(".env")).collect();
    assert!(env_files.iter().all(|(_, (_, private))| *private), "env files are owner-only");
    let all: String = env_files.iter().map(|(name, (text, _))| format!("== {name}\n{text}")).collect();
    insta::assert_snapshot!("demo_env_files", all);
    // The same input, the same bytes.
    assert_eq!(files, compose_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("apphost.yaml")));
}

#[test]
fn persistence_replicas_and_own_ports_are_mapped() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("apphost.yaml");
    std::fs::write(
        &file,
        "name: shop\nresources:\n  db:\n    kind: postgres\n    persistent: true\n  api:\n    kind: project\n    package: sender\n    \
         ports: [9000]\n    references: [db]\n    wait_for: [db]\n  worker:\n    kind: project\n    package: receiver\n    \
         replicas: 3\n    references: [db, api]\n",
    )
    .unwrap();
    let files = compose_files(&file);
    insta::assert_snapshot!("persistent_replicated_compose", files["compose.yaml"].0);
}

#[test]
fn an_executable_cannot_be_published_and_is_named_where_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("apphost.yaml");
    std::fs::write(
        &file,
        "name: tools\nresources:\n  db:\n    kind: postgres\n  job:\n    kind: executable\n    command: ./job.sh\n",
    )
    .unwrap();
    let t = topology::load(&file).unwrap();
    let err = stack(&t, &password).err().expect("an executable has no image");
    let mut out = String::new();
    GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
        .with_width(100)
        .render_report(&mut out, err.as_ref())
        .unwrap();
    let out = out.replace(&file.display().to_string(), "apphost.yaml");
    insta::assert_snapshot!("executable_refused", out);
}

#[test]
fn the_demo_stack_for_kubernetes() {
    let t = topology::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("apphost.yaml")).unwrap();
    let stack = stack(&t, &password).unwrap();
    let image = |i: &crate::plan::Instance| project_image(&t.name, &i.resource.name, "test");
    let mut expected = Vec::new();
    let files = super::kubernetes::render(&t, &stack, &image, super::kubernetes::Secrets::Generated, &mut expected);
    assert!(expected.is_empty());
    for (name, (text, private)) in &files {
        assert_eq!(*private, name.ends_with(".env"), "{name}");
        if !private {
            assert!(!text.contains("secret-of-"), "no password in {name}:\n{text}");
        }
    }
    let all: String = files.iter().map(|(name, (text, _))| format!("== {name}\n{text}")).collect();
    insta::assert_snapshot!("demo_kubernetes", all);

    // Secrets the user provides: no env files, no generator, and `publish` names what they must hold.
    let files = super::kubernetes::render(&t, &stack, &image, super::kubernetes::Secrets::External, &mut expected);
    assert!(files.keys().all(|name| !name.ends_with(".env")), "{:?}", files.keys());
    assert!(!files["kustomization.yaml"].0.contains("secretGenerator"));
    assert!(
        expected.iter().any(|e| e.contains("`sender-env`") && e.contains("ConnectionStrings__sender-db")),
        "{expected:?}"
    );
}
