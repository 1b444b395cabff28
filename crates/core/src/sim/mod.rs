//! The ESP fleet simulator: deterministic from a seed, physics first, with labelled failures.
//!
//! - [`catalog`]: pump and motor catalog.
//! - [`plant`]: the physical model of one installation and its protection relay.
//! - [`family`]: alternative modelling choices (gas handling, inflow, motor, drive control,
//!   gauges, normal operations) selectable per run; `holdout` is never tuned on.
//! - [`fleet`]: planning a fleet (installations, sampling, which conditions strike when) and the
//!   scenario file that pins parts of it; ground-truth labels.
//! - [`runner`]: runs one planned well sample by sample through normal life and its episodes,
//!   read through imperfect sensors.
//! - [`csv`]: the canonical CSV writer.

pub mod catalog;
pub mod csv;
pub mod family;
pub mod fleet;
pub mod plant;
pub mod runner;

#[cfg(test)]
mod family_tests;
#[cfg(test)]
mod tests;

pub use catalog::{PUMP_CATALOG, PumpModel};
pub use family::{Family, Operation, OperationKind, WellModel};
pub use fleet::{
    ConditionChoice, Episode, FleetConfig, FleetPlan, IntervalChoice, Label, Scenario, WellPlan,
    plan_fleet,
};
pub use plant::{Effects, Plant, PlantState, TrueState};
pub use runner::{Sample, WellSimulator};
