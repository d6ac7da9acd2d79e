//! The reading methods of a TCP cosocket: `receive` (`"*l"`, `"*a"`, a
//! size), `receiveany` and `receiveuntil`'s iterator, read by the shared
//! [`reader`](super::super::reader) over the connection. A read timeout
//! keeps the connection, every other error closes it.

use std::time::Duration;

use bytes::BytesMut;
use mlua::{Lua, MultiValue, Table, Value};

use super::super::fail;
use super::super::reader::{self, Read, Source};
use super::{Conn, Tcp, fill, this};

pub(super) fn install(lua: &Lua, methods: &Table) -> mlua::Result<()> {
    methods.set("receive", lua.create_async_function(receive)?)?;
    methods.set("receiveany", lua.create_async_function(receiveany)?)?;
    methods.set("receiveuntil", lua.create_function(receiveuntil)?)?;
    Ok(())
}

impl Source for Conn {
    fn buf(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    async fn fill(&mut self, timeout: Duration) -> Result<usize, String> {
        fill(self, timeout).await
    }
}

/// Gives the connection back after a read unless its error was fatal.
fn give_back<T>(tcp: &Tcp, conn: Conn, generation: u64, read: &Result<T, (String, BytesMut)>) {
    let keep = match read {
        Ok(_) => true,
        Err((e, _)) => e == "timeout",
    };
    tcp.give_back(conn, generation, keep);
}

async fn receive(lua: Lua, (sock, pattern): (Table, Value)) -> mlua::Result<MultiValue> {
    let tcp = this(&lua, &sock)?;
    let pattern = reader::pattern_arg(&pattern)?;
    let (mut conn, generation) = match tcp.take("socket busy reading") {
        Ok(c) => c,
        Err(e) => return fail(&lua, e),
    };
    let read: Read = reader::receive(&mut conn, pattern, tcp.read_timeout.get()).await;
    // "*a" at the end of the stream is a success, but the connection is
    // spent.
    give_back(&tcp, conn, generation, &read);
    reader::results(&lua, read)
}

async fn receiveany(lua: Lua, (sock, max): (Table, Value)) -> mlua::Result<MultiValue> {
    let tcp = this(&lua, &sock)?;
    let max = reader::max_arg(&max)?;
    let (mut conn, generation) = match tcp.take("socket busy reading") {
        Ok(c) => c,
        Err(e) => return fail(&lua, e),
    };
    let read = reader::receive_any(&mut conn, max, tcp.read_timeout.get()).await;
    give_back(&tcp, conn, generation, &read);
    reader::any_results(&lua, read)
}

/// `sock:receiveuntil(pattern, {inclusive = bool})`: an iterator function
/// taking an optional size.
fn receiveuntil(
    lua: &Lua,
    (sock, pattern, opts): (Table, mlua::LuaString, Option<Table>),
) -> mlua::Result<MultiValue> {
    let tcp = this(lua, &sock)?;
    reader::until_iterator(
        lua,
        &pattern.as_bytes(),
        opts.as_ref(),
        move |lua, until, size| {
            let tcp = tcp.clone();
            async move {
                tcp.owner.check(&lua)?;
                let (mut conn, generation) = match tcp.take("socket busy reading") {
                    Ok(c) => c,
                    Err(e) => return fail(&lua, e),
                };
                let timeout = tcp.read_timeout.get();
                let read = reader::receive_until(&mut conn, &until, size, timeout).await;
                give_back(&tcp, conn, generation, &read);
                reader::until_results(&lua, read)
            }
        },
    )
}
