//! `kind: container`: any image, run on the Docker engine only.

use super::{Field, Launch, LaunchContext, Placement, ResourceKind};
use crate::{
    plan::Instance,
    runtime::StartError,
    topology::{Diag, Resource},
};

pub struct Container;

impl ResourceKind for Container {
    fn name(&self) -> &'static str {
        "container"
    }

    fn placement(&self) -> Placement {
        Placement::Container
    }

    fn fields(&self) -> &'static [Field] {
        &[Field::Image]
    }

    fn check(&self, r: &Resource) -> Option<Diag> {
        r.image.is_none().then(|| {
            Diag::new(format!("container `{}` has no `image`", r.name), r.span, "missing `image`")
                .help("add `image: NAME:TAG`")
        })
    }

    fn launch(&self, instance: &Instance, _: &LaunchContext<'_>) -> Result<Launch, StartError> {
        Err(StartError::new(format!("`{}` is a container; the process runtime cannot run it", instance.resource.name)))
    }
}
