//! The payment's state machine. States only move forward: along the main line
//! `session_created → authorized → captured → refunded`, or off it into a terminal state
//! (`declined`, `voided`, `expired`, `failed`). An event that implies a state already passed is
//! recorded and ignored, so duplicates and late deliveries cannot move a payment back; an event
//! that skips ahead (a capture seen before its authorization) moves it there and the steps it
//! skipped are reported too, so the saga still hears each of them once.

use serde::{Deserialize, Serialize};

/// Where a payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentState {
    /// The session is open at the provider; the buyer has not paid.
    SessionCreated,
    /// The buyer's funds are held; nothing has moved yet.
    Authorized,
    /// The held funds were taken.
    Captured,
    /// The captured funds were given back (terminal).
    Refunded,
    /// The buyer's payment was refused, or the session expired unpaid (terminal).
    Declined,
    /// The session or authorization was cancelled by us (terminal); also the tombstone of a
    /// void that arrived before its session.
    Voided,
    /// The session ran out at the provider (terminal).
    Expired,
    /// No session could be opened (terminal).
    Failed,
}

impl PaymentState {
    /// The column value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SessionCreated => "session_created",
            Self::Authorized => "authorized",
            Self::Captured => "captured",
            Self::Refunded => "refunded",
            Self::Declined => "declined",
            Self::Voided => "voided",
            Self::Expired => "expired",
            Self::Failed => "failed",
        }
    }

    /// The state named by a column value.
    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "session_created" => Self::SessionCreated,
            "authorized" => Self::Authorized,
            "captured" => Self::Captured,
            "refunded" => Self::Refunded,
            "declined" => Self::Declined,
            "voided" => Self::Voided,
            "expired" => Self::Expired,
            "failed" => Self::Failed,
            _ => return None,
        })
    }

    /// Position on the main line; `None` for the side exits.
    fn rank(self) -> Option<u8> {
        match self {
            Self::SessionCreated => Some(0),
            Self::Authorized => Some(1),
            Self::Captured => Some(2),
            Self::Refunded => Some(3),
            _ => None,
        }
    }

    /// Whether nothing can follow.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Refunded | Self::Declined | Self::Voided | Self::Expired | Self::Failed
        )
    }

    /// The main-line states after `self` up to and including `to`, when the move is forward
    /// (each one is a step the saga should hear of); `None` when `to` is already passed, equal,
    /// or unreachable from here.
    pub fn advance(self, to: Self) -> Option<Vec<Self>> {
        if self.is_terminal() || self == to {
            return None;
        }
        match (self.rank(), to.rank()) {
            (Some(from), Some(target)) if target > from => Some(
                [
                    Self::SessionCreated,
                    Self::Authorized,
                    Self::Captured,
                    Self::Refunded,
                ]
                .into_iter()
                .filter(|s| s.rank().is_some_and(|r| r > from && r <= target))
                .collect(),
            ),
            (Some(_), Some(_)) => None,
            // A side exit from a live state: declined/expired only before the funds are held;
            // voided before the capture; failed only while the session is being opened.
            (Some(from), None) => match to {
                Self::Declined | Self::Expired | Self::Failed if from == 0 => Some(vec![to]),
                Self::Voided if from <= 1 => Some(vec![to]),
                _ => None,
            },
            (None, _) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PaymentState::*;

    #[test]
    fn a_capture_seen_before_its_authorization_reports_both_steps() {
        assert_eq!(
            SessionCreated.advance(Captured),
            Some(vec![Authorized, Captured])
        );
        assert_eq!(Authorized.advance(Captured), Some(vec![Captured]));
    }

    #[test]
    fn a_state_already_passed_or_terminal_is_ignored() {
        assert_eq!(Captured.advance(Authorized), None);
        assert_eq!(Authorized.advance(Authorized), None);
        assert_eq!(Refunded.advance(Captured), None);
        assert_eq!(Voided.advance(Authorized), None);
        assert_eq!(Captured.advance(Voided), None);
        assert_eq!(Authorized.advance(Declined), None);
    }

    #[test]
    fn side_exits_are_taken_only_from_where_they_make_sense() {
        assert_eq!(SessionCreated.advance(Declined), Some(vec![Declined]));
        assert_eq!(SessionCreated.advance(Voided), Some(vec![Voided]));
        assert_eq!(Authorized.advance(Voided), Some(vec![Voided]));
    }

    #[test]
    fn every_state_round_trips_through_its_column_value() {
        for s in [
            SessionCreated,
            Authorized,
            Captured,
            Refunded,
            Declined,
            Voided,
            Expired,
            Failed,
        ] {
            assert_eq!(super::PaymentState::parse(s.as_str()), Some(s));
        }
    }
}
