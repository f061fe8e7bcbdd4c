//! Installing, checking and removing a PvD's table and rules, from its
//! [`PvdRouting`](crate::plan::routing::PvdRouting).
mod install;
#[cfg(test)]
mod tests;
mod verify;
