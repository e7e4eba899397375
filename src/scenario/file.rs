//! Scenario files: the steps of a scenario in YAML, read with the same
//! line/column diagnostics as `apphost.yaml`.
//!
//! ```yaml
//! name: broker-blip            # optional; the file's stem otherwise
//! steps:
//!   - load: { rate: 50 }       # or just `- load`
//!   - wait: 2s
//!   - chaos: { action: stop, resource: broker, for: 10s }
//!   - wait: { healthy: broker }
//!   - chaos: { action: kill, resource: sender, when: batch-in-flight }
//!   - chaos: { action: kill, resource: receiver, when: commit-held }   # or store-blocked
//!   - poison
//!   - redeliver
//!   - stop-load
//!   - assert: { refused_at_most: 0, unavailable_at_least: 0, rejected_at_least: 1 }
//! ```

use std::{path::Path, time::Duration};

use miette::NamedSource;

use super::steps::{Action, Chaos, Expect, Step, When};
use crate::topology::{
    diagnostics::{Diag, LoadError},
    parse_duration,
    yaml::{Node, Source, check_keys, did_you_mean},
};

pub struct ScenarioFile {
    pub name: String,
    pub steps: Vec<Step>,
}

const STEPS: [&str; 8] = ["load", "stop-load", "wait", "chaos", "poison", "redeliver", "assert", ""];

/// A scenario file with a mistake, rendered against its source.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("scenario file {file} has a problem")]
#[diagnostic(
    code(apphost::scenario),
    help("steps are load, stop-load, wait, chaos, poison, redeliver and assert; see `apphost test --help`")
)]
pub struct InvalidScenario {
    pub file: String,
    #[source_code]
    pub source_code: NamedSource<String>,
    #[related]
    pub problems: Vec<Diag>,
}

/// Reads the scenario at `path`; `resources` are the names chaos may act on.
pub fn load(path: &Path, resources: &[String]) -> miette::Result<ScenarioFile> {
    let text =
        std::fs::read_to_string(path).map_err(|source| LoadError::Read { file: path.display().to_string(), source })?;
    parse(path, &text, resources).map_err(|problem| {
        let file = path.display().to_string();
        InvalidScenario {
            source_code: NamedSource::new(&file, text.clone()).with_language("yaml"),
            file,
            problems: vec![problem],
        }
        .into()
    })
}

pub fn parse(path: &Path, text: &str, resources: &[String]) -> Result<ScenarioFile, Diag> {
    let src = Source::new(text);
    let docs = src.parse()?;
    let Some(doc) = docs.first() else {
        return Err(Diag::new("the scenario file is empty", (0, 0).into(), "here").help("it needs a `steps:` list"));
    };
    let root = src.node(doc);
    let entries = root.mapping(&src)?;
    check_keys(&entries, &["name", "steps"], "a scenario")?;
    let mut name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "scenario".into());
    let mut steps = None;
    for (key, _, value) in &entries {
        match key.as_str() {
            "name" => name = value.string()?,
            _ => {
                steps = Some(
                    value.sequence(&src)?.iter().map(|s| step(&src, *s, resources)).collect::<Result<Vec<_>, _>>()?,
                )
            }
        }
    }
    let steps = steps.ok_or_else(|| {
        Diag::new("the scenario has no `steps`", root.span, "here")
            .help("add `steps:` with a list of load, wait, chaos, poison, redeliver, stop-load and assert")
    })?;
    if !steps.iter().any(|s| matches!(s, Step::Load { .. })) {
        return Err(Diag::new("the scenario never starts load", root.span, "no `load` step")
            .help("add `- load` before the fault: a scenario checks what the sender acknowledged"));
    }
    Ok(ScenarioFile { name, steps })
}

fn duration(node: Node<'_>) -> Result<Duration, Diag> {
    let text = node.scalar_text().ok_or_else(|| node.wrong_type("a duration like `10s`"))?;
    parse_duration(&text).ok_or_else(|| {
        Diag::new(format!("`{text}` is not a duration"), node.span, "expected e.g. `500ms`, `10s`, `2m`")
    })
}

fn step(src: &Source<'_>, node: Node<'_>, resources: &[String]) -> Result<Step, Diag> {
    let unknown = |word: &str, span| {
        let mut diag = Diag::new(format!("unknown step `{word}`"), span, "unknown step");
        diag.help = Some(match did_you_mean(word, STEPS.iter().copied().filter(|s| !s.is_empty())) {
            Some(best) => format!("did you mean `{best}`?"),
            None => "steps are: load, stop-load, wait, chaos, poison, redeliver, assert".into(),
        });
        diag
    };
    if let Some(word) = node.scalar_text().filter(|_| !node.is_null()) {
        return match word.as_str() {
            "load" => Ok(Step::Load { rate: None }),
            "stop-load" => Ok(Step::StopLoad),
            "poison" => Ok(Step::Poison),
            "redeliver" => Ok(Step::Redeliver),
            other => Err(unknown(other, node.span)),
        };
    }
    let entries = node.mapping(src)?;
    let [(kind, key, value)] = entries.as_slice() else {
        return Err(Diag::new("a step has exactly one key", node.span, "here")
            .help("write each step as its own list item: `- wait: 2s`"));
    };
    let resource = |n: Node<'_>| -> Result<String, Diag> {
        let name = n.string()?;
        if resources.contains(&name) {
            return Ok(name);
        }
        let mut diag = Diag::new(format!("no resource is called `{name}`"), n.span, "unknown resource");
        diag.help = Some(match did_you_mean(&name, resources.iter().map(String::as_str)) {
            Some(best) => format!("did you mean `{best}`?"),
            None => format!("resources: {}", resources.join(", ")),
        });
        Err(diag)
    };
    match kind.as_str() {
        "load" => {
            let mut rate = None;
            if !value.is_null() {
                let fields = value.mapping(src)?;
                check_keys(&fields, &["rate"], "`load`")?;
                for (_, _, v) in &fields {
                    rate = Some(v.integer(1, 10_000)? as u32);
                }
            }
            Ok(Step::Load { rate })
        }
        "wait" => {
            if value.scalar_text().is_some() {
                return Ok(Step::Wait(duration(*value)?));
            }
            let fields = value.mapping(src)?;
            check_keys(&fields, &["healthy"], "`wait`")?;
            let (_, _, v) = fields.first().ok_or_else(|| value.wrong_type("a duration or `{ healthy: RESOURCE }`"))?;
            Ok(Step::WaitHealthy(resource(*v)?))
        }
        "chaos" => {
            let fields = value.mapping(src)?;
            check_keys(&fields, &["action", "resource", "for", "when"], "`chaos`")?;
            let (mut action, mut target, mut lasting, mut when) = (None, None, None, When::Now);
            for (k, _, v) in &fields {
                match k.as_str() {
                    "action" => {
                        let name = v.string()?;
                        action = Some(name.parse::<Action>().ok().ok_or_else(|| {
                            Diag::new(format!("unknown action `{name}`"), v.span, "unknown action")
                                .help(format!("actions: {}", action_names()))
                        })?);
                    }
                    "resource" => target = Some(resource(*v)?),
                    "for" => lasting = Some(duration(*v)?),
                    _ => {
                        let name = v.string()?;
                        when = When::ALL.into_iter().find(|w| w.as_str() == name).ok_or_else(|| {
                            let all: Vec<&str> = When::ALL.iter().map(|w| w.as_str()).collect();
                            Diag::new(format!("unknown moment `{name}`"), v.span, "unknown moment")
                                .help(format!("moments: {}", all.join(", ")))
                        })?;
                    }
                }
            }
            let action = action.ok_or_else(|| {
                Diag::new("`chaos` needs an `action`", value.span, "here").help(format!("actions: {}", action_names()))
            })?;
            let resource = target.ok_or_else(|| Diag::new("`chaos` needs a `resource`", value.span, "here"))?;
            if lasting.is_some() && action.undo().is_none() {
                return Err(Diag::new(format!("`for` cannot undo `{}`", action.as_str()), value.span, "here")
                    .help("`for` goes with stop, pause and partition"));
            }
            if when.holds_the_database() && action != Action::Kill {
                return Err(Diag::new(format!("`{}` goes with `kill` only", when.as_str()), value.span, "here").help(
                    "the receiver is held at its database until it is killed; any other action would wait there",
                ));
            }
            Ok(Step::Chaos(Chaos { action, resource, lasting, when }))
        }
        "assert" => {
            let fields = value.mapping(src)?;
            check_keys(&fields, &["refused_at_most", "unavailable_at_least", "rejected_at_least"], "`assert`")?;
            let mut expect = Expect::default();
            for (k, _, v) in &fields {
                let n = v.integer(0, i64::MAX)?;
                match k.as_str() {
                    "refused_at_most" => expect.refused_at_most = Some(n as usize),
                    "unavailable_at_least" => expect.unavailable_at_least = Some(n as usize),
                    _ => expect.rejected_at_least = Some(n as u64),
                }
            }
            Ok(Step::Assert(expect))
        }
        other => Err(unknown(other, key.span)),
    }
}

fn action_names() -> String {
    Action::ALL.map(Action::as_str).join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        ["sender", "receiver", "broker"].map(String::from).to_vec()
    }

    fn problem(text: &str) -> String {
        let err = parse(Path::new("s.yaml"), text, &names()).err().expect("a problem");
        format!("{}: {} ({})", err.message, err.label, err.help.unwrap_or_default())
    }

    #[test]
    fn every_kind_of_step_reads() {
        let text = "name: blip\nsteps:\n  - load: { rate: 50 }\n  - wait: 2s\n  - chaos: { action: stop, resource: broker, for: 10s }\n  - wait: { healthy: broker }\n  - chaos: { action: kill, resource: sender, when: batch-in-flight }\n  - poison\n  - stop-load\n  - assert: { refused_at_most: 0, rejected_at_least: 1 }\n";
        let s = parse(Path::new("x.yaml"), text, &names()).unwrap();
        assert_eq!(s.name, "blip");
        assert_eq!(s.steps.len(), 8);
        assert_eq!(s.steps[0], Step::Load { rate: Some(50) });
        assert_eq!(
            s.steps[2],
            Step::Chaos(Chaos {
                action: Action::Stop,
                resource: "broker".into(),
                lasting: Some(Duration::from_secs(10)),
                when: When::Now
            })
        );
        assert_eq!(s.steps[3], Step::WaitHealthy("broker".into()));
        assert!(matches!(&s.steps[4], Step::Chaos(c) if c.when == When::BatchInFlight));
        assert_eq!(
            s.steps[7],
            Step::Assert(Expect { refused_at_most: Some(0), rejected_at_least: Some(1), ..Expect::default() })
        );
    }

    #[test]
    fn mistakes_are_named_with_a_fix() {
        assert_eq!(problem("steps:\n  - lod\n"), "unknown step `lod`: unknown step (did you mean `load`?)");
        assert_eq!(
            problem("steps:\n  - load\n  - chaos: { action: stop, resource: brokr }\n"),
            "no resource is called `brokr`: unknown resource (did you mean `broker`?)"
        );
        assert_eq!(
            problem("steps:\n  - load\n  - chaos: { action: explode, resource: broker }\n"),
            "unknown action `explode`: unknown action (actions: stop, start, kill, pause, resume, restart, partition, heal)"
        );
        assert_eq!(
            problem("steps:\n  - load\n  - wait: soon\n"),
            "`soon` is not a duration: expected e.g. `500ms`, `10s`, `2m` ()"
        );
        assert_eq!(
            problem("steps:\n  - load\n  - chaos: { action: kill, resource: sender, for: 5s }\n"),
            "`for` cannot undo `kill`: here (`for` goes with stop, pause and partition)"
        );
        assert_eq!(
            problem("steps:\n  - load\n  - chaos: { action: kill, resource: receiver, when: later }\n"),
            "unknown moment `later`: unknown moment (moments: now, batch-in-flight, commit-held, store-blocked)"
        );
        assert!(
            problem("steps:\n  - load\n  - chaos: { action: pause, resource: receiver, when: commit-held }\n")
                .starts_with("`commit-held` goes with `kill` only")
        );
        assert!(problem("steps:\n  - wait: 1s\n").starts_with("the scenario never starts load"));
        assert!(problem("stepz: []\n").contains("did you mean `steps`?"));
    }
}
