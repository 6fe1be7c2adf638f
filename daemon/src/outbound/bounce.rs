//! Bounces (OUT-7): a `multipart/report` delivery status notification (RFC 3464) for the
//! sender of a message that failed permanently or expired.
