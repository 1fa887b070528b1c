//! One line per query: bind the arguments, run on the transaction's connection, map
//! the error (`?` inside). `exec!` gives the rows affected, `one!`/`opt!`/`all!` a
//! scalar column, `row!`/`rows!` tuples.

macro_rules! exec {
    ($c:expr, $sql:expr $(, $arg:expr)* $(,)?) => {
        sqlx::query($sql)$(.bind($arg))*
            .execute(&mut *$c)
            .await
            .map_err($crate::pg)?
            .rows_affected()
    };
}

macro_rules! one {
    ($c:expr, $t:ty, $sql:expr $(, $arg:expr)* $(,)?) => {
        sqlx::query_scalar::<_, $t>($sql)$(.bind($arg))*
            .fetch_one(&mut *$c)
            .await
            .map_err($crate::pg)?
    };
}

macro_rules! opt {
    ($c:expr, $t:ty, $sql:expr $(, $arg:expr)* $(,)?) => {
        sqlx::query_scalar::<_, $t>($sql)$(.bind($arg))*
            .fetch_optional(&mut *$c)
            .await
            .map_err($crate::pg)?
    };
}

macro_rules! all {
    ($c:expr, $t:ty, $sql:expr $(, $arg:expr)* $(,)?) => {
        sqlx::query_scalar::<_, $t>($sql)$(.bind($arg))*
            .fetch_all(&mut *$c)
            .await
            .map_err($crate::pg)?
    };
}

macro_rules! row {
    ($c:expr, $t:ty, $sql:expr $(, $arg:expr)* $(,)?) => {
        sqlx::query_as::<_, $t>($sql)$(.bind($arg))*
            .fetch_optional(&mut *$c)
            .await
            .map_err($crate::pg)?
    };
}

macro_rules! rows {
    ($c:expr, $t:ty, $sql:expr $(, $arg:expr)* $(,)?) => {
        sqlx::query_as::<_, $t>($sql)$(.bind($arg))*
            .fetch_all(&mut *$c)
            .await
            .map_err($crate::pg)?
    };
}

/// Runs `$body` (an expression using `$c: &mut PgConnection` and `$out: &mut
/// Outbox`, evaluating to a future) as one write, retried whole on a conflict. A
/// macro, not a function taking a closure: the body borrows the method's arguments,
/// which a higher-ranked closure bound cannot express with a `Send` future.
macro_rules! write_tx {
    ($self:expr, |$c:ident, $out:tt| $body:expr) => {
        write_tx!($self, begin, |$c, $out| $body)
    };
    ($self:expr, $begin:ident, |$c:ident, $out:tt| $body:expr) => {{
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let mut outbox = $crate::Outbox::default();
            let ran = async {
                let mut tx = $self.$begin().await?;
                #[allow(unused_variables)]
                let $out: &mut $crate::Outbox = &mut outbox;
                let $c: &mut sqlx::PgConnection = &mut tx;
                let value = $body?;
                Ok::<_, hush_store::StoreError>((tx, value))
            }
            .await;
            match $self.finish(ran, &outbox, attempt).await {
                $crate::Step::Done(done) => break done,
                $crate::Step::Again => continue,
            }
        }
    }};
}

/// Runs `$body` (using `$c`) in one read-only snapshot, retried when the
/// connection was lost before it read anything useful.
macro_rules! read_tx {
    ($self:expr, |$c:ident| $body:expr) => {{
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let done = async {
                let mut tx = $self.begin_read().await?;
                let $c: &mut sqlx::PgConnection = &mut tx;
                let value = $body?;
                tx.commit().await.map_err($crate::pg)?;
                Ok::<_, hush_store::StoreError>(value)
            }
            .await;
            match done {
                Err(e) if attempt < $crate::ATTEMPTS && e.is_retryable() => {
                    $crate::backoff(attempt).await
                }
                done => break done,
            }
        }
    }};
}
