//! Checking that what a PvD's plan says is really in the kernel, without
//! changing anything. The daemon re-asserts a plan only when this fails, so
//! its own writes (which echo back as netlink events) cause no loop.
use std::collections::HashSet;

use crate::{
    host::netlink::{route_attrs::route_table, RoutingDump},
    plan::routing::{PvdRouting, RouteSpec, RuleSpec},
};

impl RoutingDump {
    /// Whether the PvD's table holds exactly the planned routes and the
    /// rules the PvD owns are exactly the planned ones. Pure: one dump
    /// serves every PvD of a pass.
    pub fn holds(&self, plan: &PvdRouting) -> bool {
        let present: HashSet<Option<RouteSpec>> = self
            .routes
            .iter()
            .filter(|msg| route_table(msg) == plan.table)
            .map(RouteSpec::from_message)
            .collect();
        let wanted: HashSet<Option<RouteSpec>> = plan.routes().into_iter().map(Some).collect();
        if present != wanted {
            return false;
        }
        let present: HashSet<Option<RuleSpec>> = self
            .rules
            .iter()
            .filter(|msg| plan.owns_rule(msg))
            .map(RuleSpec::from_message)
            .collect();
        let wanted: HashSet<Option<RuleSpec>> = plan.rules().into_iter().map(Some).collect();
        present == wanted
    }
}
