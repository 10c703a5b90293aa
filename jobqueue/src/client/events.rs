//! `Client::events`: a typed stream of a queue's events.
