//! BoxOffice: a ticketing platform where every ticket and every order is a supervised actor.
pub mod domain;
