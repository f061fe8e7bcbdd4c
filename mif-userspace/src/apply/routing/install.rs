//! Installing and removing a PvD's table and rules.
//!
//! Both directions converge on a target state instead of replaying steps, so
//! they can be repeated after a crash or a partial failure: `install` adds
//! what is missing and prunes what its PvD holds beyond the plan, `remove` is
//! a prune down to nothing.
//!
//! What to prune is read from a [`RoutingDump`] the caller took before: a
//! pass dumps once for all its PvDs instead of once per PvD (with 64 PvDs,
//! 192 dumps of every table per link change). That is exact for rules (an
//! add never changes a rule that was there) and for the routes our adds did
//! not replace in place; when a dumped route sits where a planned one went
//! (same prefix and metric, another next hop), the table is dumped again
//! after the adds.

use std::collections::HashSet;
use std::net::IpAddr;

use netlink_packet_route::{route::RouteMessage, rule::RuleMessage};

use crate::{
    host::netlink::{
        error::{is_exists, is_missing},
        route_attrs::{metric_of, prefix_of, route_table},
        Netlink, NetlinkError, RoutingDump,
    },
    plan::routing::{
        delete_message, describe_route, describe_rule, PvdRouting, RouteSpec, RuleSpec,
    },
};

/// Where a route sits in its table: a replace overwrites the route with the
/// same destination and metric.
type Slot = (IpAddr, u8, u32);

fn slot_of(msg: &RouteMessage) -> Option<Slot> {
    prefix_of(msg).map(|(dst, len)| (dst, len, metric_of(&msg.attributes)))
}

impl Netlink {
    /// Makes the kernel hold exactly what `plan` says for this PvD: the
    /// routes of its table and its rules. Idempotent.
    ///
    /// The table is filled before any rule points at it: a rule to an empty
    /// table falls through to the next rule, which would send the PvD's
    /// traffic out of another network.
    /// `before` is what the kernel held before (a dump of this pass).
    pub async fn install(
        &self,
        plan: &PvdRouting,
        before: &RoutingDump,
    ) -> Result<(), NetlinkError> {
        plan.validate()?;
        let routes = plan.routes();
        for route in &routes {
            self.add_route(plan, route).await?;
        }
        let slots: HashSet<Slot> = routes
            .iter()
            .map(|r| (r.dst, r.prefix_len, r.metric))
            .collect();
        let keep: HashSet<&RouteSpec> = routes.iter().collect();
        let replaced = before.routes.iter().any(|msg| {
            route_table(msg) == plan.table
                && slot_of(msg).is_some_and(|slot| slots.contains(&slot))
                && !RouteSpec::from_message(msg).is_some_and(|spec| keep.contains(&spec))
        });
        if replaced {
            // The routes only: the rules are pruned from `before` below.
            let after = RoutingDump {
                routes: self.routes().await?,
                rules: Vec::new(),
            };
            self.prune_routes(plan, &routes, &after).await?;
        } else {
            self.prune_routes(plan, &routes, before).await?;
        }
        let rules = plan.rules();
        for rule in &rules {
            self.add_rule(plan, rule).await?;
        }
        self.prune_rules(plan, &rules, before).await
    }

    /// Removes what `install` put in: this PvD's rules first (so no rule
    /// ever leads to a half-emptied table), then every route of its table,
    /// as `before` (a dump) lists them. Objects already gone are fine.
    pub async fn remove(
        &self,
        plan: &PvdRouting,
        before: &RoutingDump,
    ) -> Result<(), NetlinkError> {
        // Guards the table flush below against the main table.
        plan.validate_removal()?;
        self.prune_rules(plan, &[], before).await?;
        self.prune_routes(plan, &[], before).await
    }

    /// Adds or replaces one route. Replace makes a changed gateway take the
    /// place of the old one (same destination and metric).
    async fn add_route(&self, plan: &PvdRouting, route: &RouteSpec) -> Result<(), NetlinkError> {
        let request = self.handle.route().add(route.to_message(plan.table));
        match request.replace().execute().await {
            Err(err) if !is_exists(&err) => Err(NetlinkError::AddRoute {
                pvd: plan.name.clone(),
                table: plan.table,
                route: route.to_string(),
                source: err,
            }),
            _ => Ok(()),
        }
    }

    /// Adds one rule. Rules have no replace: the kernel would add a
    /// duplicate, so the request stays exclusive and EEXIST means done.
    async fn add_rule(&self, plan: &PvdRouting, rule: &RuleSpec) -> Result<(), NetlinkError> {
        let mut request = self.handle.rule().add();
        *request.message_mut() = rule.to_message();
        match request.execute().await {
            Err(err) if !is_exists(&err) => Err(NetlinkError::AddRule {
                pvd: plan.name.clone(),
                rule: rule.to_string(),
                source: err,
            }),
            _ => Ok(()),
        }
    }

    /// Deletes every route of the PvD's table that is not in `keep`. The
    /// table belongs to the PvD, so anything else in it is stale.
    async fn prune_routes(
        &self,
        plan: &PvdRouting,
        keep: &[RouteSpec],
        dump: &RoutingDump,
    ) -> Result<(), NetlinkError> {
        let keep: HashSet<&RouteSpec> = keep.iter().collect();
        let stale = dump.routes.iter().filter(|msg| {
            route_table(msg) == plan.table
                && !RouteSpec::from_message(msg).is_some_and(|spec| keep.contains(&spec))
        });
        for msg in stale {
            self.delete_route(plan, msg).await?;
        }
        Ok(())
    }

    async fn delete_route(
        &self,
        plan: &PvdRouting,
        msg: &RouteMessage,
    ) -> Result<(), NetlinkError> {
        let request = self.handle.route().del(delete_message(msg));
        match request.execute().await {
            Err(err) if !is_missing(&err) => Err(NetlinkError::DeleteRoute {
                pvd: plan.name.clone(),
                table: plan.table,
                route: describe_route(msg),
                source: err,
            }),
            _ => Ok(()),
        }
    }

    /// Deletes the PvD's rules (our protocol, its table, its priorities)
    /// that are not in `keep`. Rules of anyone else are never touched.
    async fn prune_rules(
        &self,
        plan: &PvdRouting,
        keep: &[RuleSpec],
        dump: &RoutingDump,
    ) -> Result<(), NetlinkError> {
        let stale = dump.rules.iter().filter(|msg| {
            plan.owns_rule(msg)
                && !RuleSpec::from_message(msg).is_some_and(|spec| keep.contains(&spec))
        });
        for msg in stale {
            self.delete_rule(plan, msg).await?;
        }
        Ok(())
    }

    /// Deletes a dumped rule by sending it back whole: the kernel deletes the
    /// first rule matching every attribute given, protocol included, so
    /// this can only hit one of ours.
    async fn delete_rule(&self, plan: &PvdRouting, msg: &RuleMessage) -> Result<(), NetlinkError> {
        let rule = describe_rule(msg);
        match self.handle.rule().del(msg.clone()).execute().await {
            Err(err) if !is_missing(&err) => Err(NetlinkError::DeleteRule {
                pvd: plan.name.clone(),
                rule,
                source: err,
            }),
            _ => Ok(()),
        }
    }
}
