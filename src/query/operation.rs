//! `operationOverTime`: Kedify's names for the store's window operations, and their parsing.
//!
//! The store evaluates a [`WindowOp`] and knows no names; the names are the trigger language's,
//! so they live here, once, in [`OperationOverTime::ALL`].

use crate::store::WindowOp;

/// A trigger's `operationOverTime`: one of Kedify's names and the store operation it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperationOverTime {
    name: &'static str,
    window_op: WindowOp,
}

impl OperationOverTime {
    pub const LAST_ONE: OperationOverTime = OperationOverTime { name: "last_one", window_op: WindowOp::LastOne };
    pub const RATE: OperationOverTime = OperationOverTime { name: "rate", window_op: WindowOp::Rate };
    pub const COUNT: OperationOverTime = OperationOverTime { name: "count", window_op: WindowOp::Count };
    pub const AVG: OperationOverTime = OperationOverTime { name: "avg", window_op: WindowOp::Avg };
    pub const MIN: OperationOverTime = OperationOverTime { name: "min", window_op: WindowOp::Min };
    pub const MAX: OperationOverTime = OperationOverTime { name: "max", window_op: WindowOp::Max };

    /// Every operation, in the order error messages and documentation list them.
    pub const ALL: [OperationOverTime; 6] = [
        OperationOverTime::LAST_ONE,
        OperationOverTime::RATE,
        OperationOverTime::COUNT,
        OperationOverTime::AVG,
        OperationOverTime::MIN,
        OperationOverTime::MAX,
    ];

    /// Parses one of Kedify's `operationOverTime` names (exact, lower case).
    pub fn from_name(name: &str) -> Option<OperationOverTime> {
        OperationOverTime::ALL.into_iter().find(|operation| operation.name == name)
    }

    /// The `operationOverTime` name, as triggers and the admin API spell it.
    pub fn name(self) -> &'static str {
        self.name
    }

    /// What the store computes per series.
    pub fn window_op(self) -> WindowOp {
        self.window_op
    }

    /// The valid names, comma-separated: `last_one, rate, count, avg, min, max`.
    pub fn names_listed() -> String {
        OperationOverTime::ALL.map(OperationOverTime::name).join(", ")
    }
}

impl Default for OperationOverTime {
    /// Kedify's default when a trigger sets no `operationOverTime`.
    fn default() -> Self {
        OperationOverTime::LAST_ONE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_to_its_operation() {
        let expected = [
            ("last_one", WindowOp::LastOne),
            ("rate", WindowOp::Rate),
            ("count", WindowOp::Count),
            ("avg", WindowOp::Avg),
            ("min", WindowOp::Min),
            ("max", WindowOp::Max),
        ];
        for (name, window_op) in expected {
            let operation = OperationOverTime::from_name(name).unwrap();
            assert_eq!((operation.name(), operation.window_op()), (name, window_op));
        }
        for unknown in ["", "median", "p99", "Rate", " rate", "last"] {
            assert_eq!(OperationOverTime::from_name(unknown), None, "{unknown:?}");
        }
        assert_eq!(OperationOverTime::default().window_op(), WindowOp::LastOne);
        assert_eq!(OperationOverTime::names_listed(), "last_one, rate, count, avg, min, max");
    }

    #[test]
    fn every_store_operation_has_exactly_one_name() {
        for window_op in WindowOp::ALL {
            let named = OperationOverTime::ALL.iter().filter(|operation| operation.window_op() == window_op).count();
            assert_eq!(named, 1, "{window_op:?}");
        }
        assert_eq!(OperationOverTime::ALL.len(), WindowOp::ALL.len());
    }
}
