//! `kind: project`: a cargo package of this workspace, built by `apphost up`
//! and run as a process with its port and telemetry injected.

use super::{EnvContext, Field, Launch, LaunchContext, Placement, ResourceKind};
use crate::{
    plan::Instance,
    runtime::StartError,
    topology::{Check, Resource},
};

pub struct Project;

impl ResourceKind for Project {
    fn name(&self) -> &'static str {
        "project"
    }

    fn placement(&self) -> Placement {
        Placement::Process
    }

    fn default_ports(&self) -> &'static [(&'static str, Option<u16>)] {
        &[("http", None)]
    }

    fn listens_on_host(&self) -> bool {
        true
    }

    fn default_check(&self, _: &Resource) -> Option<Check> {
        Some(Check::Http { path: "/health/ready".into(), port: "http".into() })
    }

    fn fields(&self) -> &'static [Field] {
        &[Field::Package, Field::Replicas]
    }

    /// `package:`, or the resource's name.
    fn package(&self, resource: &Resource) -> Option<String> {
        Some(resource.package.clone().unwrap_or_else(|| resource.name.clone()))
    }

    fn own_env(&self, me: &Instance, ctx: &EnvContext<'_>) -> Vec<(String, String)> {
        super::process_env(me, ctx)
    }

    fn launch(&self, instance: &Instance, at: &LaunchContext<'_>) -> Result<Launch, StartError> {
        let r = &instance.resource;
        let package = self.package(r).unwrap_or_default();
        let binary = at
            .binaries
            .get(&package)
            .ok_or_else(|| StartError::new(format!("no binary was built for package `{package}`")))?;
        Ok(Launch::command(binary.clone(), r.args.clone(), super::working_dir(r, at.root)))
    }
}
