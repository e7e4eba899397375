//! The `wait_for` graph: cycles, and which resources can start together.

use std::collections::{HashMap, HashSet};

use super::Topology;

/// A cycle of waits as resource names, first repeated last (`a → b → a`).
pub fn find_cycle(t: &Topology) -> Option<Vec<String>> {
    fn visit<'t>(
        t: &'t Topology,
        name: &'t str,
        stack: &mut Vec<&'t str>,
        done: &mut HashSet<&'t str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| *n == name) {
            let mut cycle: Vec<String> = stack[at..].iter().map(|s| s.to_string()).collect();
            cycle.push(name.to_owned());
            return Some(cycle);
        }
        if !done.insert(name) {
            return None;
        }
        stack.push(name);
        for wait in t.resource(name).map(|r| r.wait_for.as_slice()).unwrap_or_default() {
            if t.resource(&wait.name).is_some()
                && let Some(cycle) = visit(t, &wait.name, stack, done)
            {
                return Some(cycle);
            }
        }
        stack.pop();
        None
    }
    let mut done = HashSet::new();
    t.resources.iter().find_map(|r| visit(t, &r.name, &mut Vec::new(), &mut done))
}

/// Resources in waves: each wave waits only on earlier waves, so a wave's
/// members can start in parallel. Stopping goes through the waves backwards.
pub fn waves(t: &Topology) -> Vec<Vec<String>> {
    let mut depth: HashMap<&str, usize> = HashMap::new();
    fn depth_of<'t>(t: &'t Topology, name: &'t str, memo: &mut HashMap<&'t str, usize>, guard: usize) -> usize {
        if let Some(d) = memo.get(name) {
            return *d;
        }
        let d = if guard > t.resources.len() {
            0 // a cycle; validation reports it
        } else {
            t.resource(name)
                .map(|r| {
                    r.wait_for
                        .iter()
                        .filter(|w| t.resource(&w.name).is_some())
                        .map(|w| depth_of(t, &w.name, memo, guard + 1) + 1)
                        .max()
                        .unwrap_or(0)
                })
                .unwrap_or(0)
        };
        memo.insert(name, d);
        d
    }
    for r in &t.resources {
        depth_of(t, &r.name, &mut depth, 0);
    }
    let max = depth.values().copied().max().unwrap_or(0);
    (0..=max)
        .map(|level| t.resources.iter().filter(|r| depth[r.name.as_str()] == level).map(|r| r.name.clone()).collect())
        .filter(|wave: &Vec<String>| !wave.is_empty())
        .collect()
}
