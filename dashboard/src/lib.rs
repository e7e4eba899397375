//! apphost's terminal dashboard: every resource's state and health, their
//! logs, the outbox pipeline's numbers and the event timeline, with
//! start/stop/restart from the keyboard.
//!
//! Data flows through:
//! - [`view`]: the narrow interface: a [`Stack`] gives plain view structs
//!   and takes [`Action`]s; the dashboard sees nothing else of the stack;
//! - [`app`]: what was read, what is selected, what a key does;
//! - [`panes`]: one module per pane, drawing the app's state;
//! - [`terminal`]: the loop that owns the terminal, reads input and redraws
//!   at a bounded rate, restoring the terminal on every way out.

pub mod app;
pub mod panes;
pub mod telemetry;
pub mod terminal;
pub mod view;

pub use terminal::{Exit, Options, run};
pub use view::{
    Action, Endpoint, Event, Health, LogLine, Outbox, Phase, Resource, Series, SeriesKind, Stack, Stream, Unit,
};
