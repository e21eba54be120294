//! Condition transforms: `filter` keeps events whose CEL condition holds, `route` sends each
//! event to every named output whose condition holds.

use super::{Outputs, Transform};
use crate::config::transforms as cfg;
use crate::event::Event;
use crate::expr::Expr;

pub struct Filter {
    cond: Expr,
    errors_logged: u64,
}

impl Filter {
    pub fn new(c: &cfg::Filter) -> Result<Self, String> {
        Ok(Self {
            cond: Expr::compile(&c.condition).map_err(|e| format!("condition: {e}"))?,
            errors_logged: 0,
        })
    }
}

/// Logs the first few evaluation failures of a component, then every 10,000th.
fn log_failure(count: &mut u64, err: &crate::expr::ExprError) {
    *count += 1;
    if *count <= 5 || (*count).is_multiple_of(10_000) {
        tracing::warn!(error = %err, failures = *count, "condition failed; treated as false");
    }
}

impl Transform for Filter {
    fn process(&mut self, e: Event, out: &mut Outputs) {
        match self.cond.test(&e) {
            Ok(true) => out.push(e),
            Ok(false) => e.deliver(),
            Err(err) => {
                log_failure(&mut self.errors_logged, &err);
                e.deliver();
            }
        }
    }
}

pub struct Route {
    routes: Vec<Expr>,
    errors_logged: u64,
}

impl Route {
    pub fn new(c: &cfg::Route) -> Result<Self, String> {
        if c.routes.is_empty() {
            return Err("routes: needs at least one route".into());
        }
        let routes = c
            .routes
            .iter()
            .map(|(name, cond)| Expr::compile(cond).map_err(|e| format!("routes.{name}: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            routes,
            errors_logged: 0,
        })
    }
}

impl Transform for Route {
    fn process(&mut self, e: Event, out: &mut Outputs) {
        let mut matched = Vec::new();
        for (i, r) in self.routes.iter().enumerate() {
            match r.test(&e) {
                Ok(true) => matched.push(i),
                Ok(false) => {}
                Err(err) => log_failure(&mut self.errors_logged, &err),
            }
        }
        let unmatched = self.routes.len();
        match matched.split_last() {
            None => out.push_named(unmatched, e),
            Some((last, rest)) => {
                for i in rest {
                    out.push_named(*i, e.clone());
                }
                out.push_named(*last, e);
            }
        }
    }
}
