//! One vocabulary for acting on a resource: the CLI (`stop`, `chaos kill`),
//! the control API (`POST /v1/resources/{name}/{action}`), the dashboard's
//! keys, scenario steps and the soak's faults all say an [`Action`].

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Start,
    Stop,
    Restart,
    /// SIGKILL (a container kill): a crash, so the restart policy applies.
    Kill,
    /// SIGSTOP (a container pause).
    Pause,
    Resume,
    /// Off its network (docker runtime only).
    Partition,
    Heal,
}

impl Action {
    pub const ALL: [Action; 8] = [
        Action::Stop,
        Action::Start,
        Action::Kill,
        Action::Pause,
        Action::Resume,
        Action::Restart,
        Action::Partition,
        Action::Heal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Restart => "restart",
            Action::Kill => "kill",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Partition => "partition",
            Action::Heal => "heal",
        }
    }

    /// What ends the fault this action starts, for `--for` and scenario
    /// faults that last a while: start after stop, resume after pause,
    /// heal after partition.
    pub fn undo(self) -> Option<Action> {
        match self {
            Action::Stop => Some(Action::Start),
            Action::Pause => Some(Action::Resume),
            Action::Partition => Some(Action::Heal),
            _ => None,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An action name that is none of [`Action::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownAction(pub String);

impl fmt::Display for UnknownAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
        write!(f, "unknown action `{}`; actions: {}", self.0, names.join(", "))
    }
}

impl std::error::Error for UnknownAction {}

impl FromStr for Action {
    type Err = UnknownAction;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Action::ALL.into_iter().find(|a| a.as_str() == s).ok_or_else(|| UnknownAction(s.to_owned()))
    }
}

/// The control API's answer to an action: what happened, or why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok(String),
    Error(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_text_and_json() {
        for action in Action::ALL {
            assert_eq!(action.as_str().parse::<Action>(), Ok(action));
            let json = serde_json::to_string(&action).unwrap();
            assert_eq!(json, format!("\"{action}\""));
            assert_eq!(serde_json::from_str::<Action>(&json).unwrap(), action);
        }
        assert!("explode".parse::<Action>().unwrap_err().to_string().contains("kill"));
    }

    #[test]
    fn an_outcome_is_the_control_api_body() {
        let ok = serde_json::to_string(&Outcome::Ok("stopped `broker`".into())).unwrap();
        assert_eq!(ok, r#"{"ok":"stopped `broker`"}"#);
        let refused: Outcome = serde_json::from_str(r#"{"error":"no resource is called `x`"}"#).unwrap();
        assert_eq!(refused, Outcome::Error("no resource is called `x`".into()));
    }

    #[test]
    fn faults_that_last_are_undone_by_their_opposite() {
        assert_eq!(Action::Stop.undo(), Some(Action::Start));
        assert_eq!(Action::Pause.undo(), Some(Action::Resume));
        assert_eq!(Action::Partition.undo(), Some(Action::Heal));
        assert_eq!(Action::Kill.undo(), None);
    }
}
