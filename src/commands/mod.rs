//! One file per verb of the command line (`crate::cli` parses and
//! dispatches): [`up`] and [`detach`] run the app through
//! [`crate::root`]; [`down`] takes it down; [`test`] runs the reliability
//! scenarios; [`remote`] talks to a running session (`ps`, `logs`,
//! `dashboard`, `stop`/`start`/`restart`, `chaos`); [`check`] and
//! [`doctor`] look at the file and the machine without starting anything;
//! [`publish`] writes the app for another engine; [`traces`] reads what the
//! app's services sent its OTLP receiver.

pub mod check;
pub mod detach;
pub mod doctor;
pub mod down;
pub mod publish;
pub mod reaper;
pub mod remote;
pub mod test;
pub mod traces;
pub mod up;
