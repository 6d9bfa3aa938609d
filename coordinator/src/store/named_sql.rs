//! Named SQL statements: the few steps Diesel's DSL cannot write (a data-modifying CTE), kept
//! as one `const` SQL string each, and still prepared once per connection.
//!
//! `diesel::sql_query` marks its statement unsafe to cache, so Postgres would parse and plan it
//! on every call. A [`Named`] statement instead has a static [`QueryId`] (its own type), which
//! Diesel's statement cache keys it by: the SQL is built and prepared on the first call on a
//! connection, and later calls only bind and execute.
//!
//! The SQL names its parameters `$1`, `$2`, ... ; [`NamedStatement::push_bind`] binds the value
//! of each with its SQL type. A parameter used twice is bound twice (Diesel numbers binds in the
//! order they are pushed). No `$` may appear in the SQL other than as a parameter.

use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::{QueryResult, RunQueryDsl};

/// A statement with a fixed SQL text and typed parameters.
pub(super) trait NamedStatement {
    /// The statement's type with `'static` lifetimes: its static, unique query id.
    type Id: 'static;
    /// The SQL, parameters written `$1`, `$2`, ...
    const SQL: &'static str;
    /// The SQL types of the rows it returns (a tuple, loaded with `Queryable`).
    type Row;
    /// Binds the value of parameter `$n` (from 1), with its SQL type.
    fn push_bind<'b>(&'b self, n: usize, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()>;
}

/// A [`NamedStatement`] to run with Diesel ([`RunQueryDsl`]).
pub(super) struct Named<S>(pub S);

impl<S: NamedStatement> QueryId for Named<S> {
    type QueryId = S::Id;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<S: NamedStatement> Query for Named<S> {
    type SqlType = S::Row;
}

impl<S: NamedStatement, Conn> RunQueryDsl<Conn> for Named<S> {}

impl<S: NamedStatement> QueryFragment<Pg> for Named<S> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let mut rest = S::SQL;
        while let Some(at) = rest.find('$') {
            out.push_sql(&rest[..at]);
            let digits = rest[at + 1..]
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len() - at - 1);
            let n = rest[at + 1..at + 1 + digits]
                .parse()
                .expect("a `$` in a named statement starts a parameter number");
            self.0.push_bind(n, &mut out)?;
            rest = &rest[at + 1 + digits..];
        }
        out.push_sql(rest);
        Ok(())
    }
}
