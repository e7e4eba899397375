//! `kind: executable`: a program on this machine (`command:`), run as a process.

use super::{EnvContext, Field, Launch, LaunchContext, Placement, ResourceKind};
use crate::{
    plan::Instance,
    runtime::StartError,
    topology::{Diag, Resource},
};

pub struct Executable;

impl ResourceKind for Executable {
    fn name(&self) -> &'static str {
        "executable"
    }

    fn placement(&self) -> Placement {
        Placement::Process
    }

    fn listens_on_host(&self) -> bool {
        true
    }

    fn fields(&self) -> &'static [Field] {
        &[Field::Command, Field::Replicas]
    }

    fn check(&self, r: &Resource) -> Option<Diag> {
        r.command.is_none().then(|| {
            Diag::new(format!("executable `{}` has no `command`", r.name), r.span, "missing `command`")
                .help("add `command: PROGRAM` (and `args:` for its arguments)")
        })
    }

    fn own_env(&self, me: &Instance, ctx: &EnvContext<'_>) -> Vec<(String, String)> {
        super::process_env(me, ctx)
    }

    fn launch(&self, instance: &Instance, at: &LaunchContext<'_>) -> Result<Launch, StartError> {
        let r = &instance.resource;
        let program = r.command.clone().unwrap_or_default();
        // A relative path is relative to the topology's folder; a bare name is looked up on PATH.
        let resolved = if program.contains('/') { at.root.join(&program) } else { program.into() };
        Ok(Launch::command(resolved, r.args.clone(), super::working_dir(r, at.root)))
    }
}
