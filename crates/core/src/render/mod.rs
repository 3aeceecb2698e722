//! Render: the STATUS response shown to people, as terminal text ([`text`], for `status` and
//! `watch`) and as the status page ([`page`], served on `/`). Pure functions of what they show
//! and `now`.

pub mod page;
pub mod text;
pub mod watch;
