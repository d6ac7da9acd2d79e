//! A request's (or timer callback's) light threads (`ngx.thread.spawn`),
//! scheduled as ngx_lua schedules them: the entry thread (the phase
//! handler, the timer callback) and the user threads it spawns run one at
//! a time, in the order ngx_lua would run them, and the phase ends when
//! they all have, or at once when any of them calls `ngx.exit` (or
//! `ngx.exec`, `ngx.redirect`), which aborts the others.
//!
//! ngx_lua's rules, kept here: `spawn` posts the parent to the back of the
//! run queue and runs the new thread at once until it first waits; a
//! thread that yields (`coroutine.yield`) or whose wait ends goes to the
//! back of the queue; a parent waiting (`ngx.thread.wait`) on a thread that
//! ends runs next. A finished thread whose parent is alive and not
//! waiting is a "zombie" keeping its results for `wait`; it is dead once
//! waited, killed, or its parent ends.
//!
//! [`drive`] runs a phase handler. Until the handler spawns a thread it
//! polls the handler directly, with nothing allocated; the first `spawn`
//! makes the request's [`Scheduler`], and from then on every thread (the
//! entry one included) is polled with a waker of its own that queues it.
//! The API side (`ngx.thread.*`, `coroutine.status`) is in
//! [`crate::lua::api::tasks`] and [`crate::lua::api`]'s coroutine module.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use mlua::{MultiValue, Thread};

use super::budget::Ran;

/// The entry thread's id.
pub const ENTRY: usize = 0;

/// How a user thread ran: what its coroutine's future gives.
pub type ThreadRun = Ran<mlua::Result<MultiValue>>;

/// A user thread's coroutine, under its time budget.
pub type ThreadFuture = Pin<Box<dyn Future<Output = ThreadRun>>>;

/// The light-thread state of one request (a field of its
/// [`ReqCtx`](super::request::ReqCtx)) or timer callback: empty, and
/// free, until a handler spawns a thread.
#[derive(Default)]
pub struct LightThreads {
    /// Set while [`drive`] polls a handler of the request: only then may it
    /// spawn threads into the request.
    driving: Cell<bool>,
    /// Made by the first `spawn` of a phase, dropped when the phase ends.
    scheduler: RefCell<Option<Rc<Scheduler>>>,
    /// `ngx.exit` in a timer callback (a request keeps its own exit status).
    exited: Cell<bool>,
}

impl LightThreads {
    /// The scheduler of the running phase, made on first use; `None`
    /// outside [`drive`].
    pub fn scheduler(&self) -> Option<Rc<Scheduler>> {
        if !self.driving.get() {
            return None;
        }
        Some(
            self.scheduler
                .borrow_mut()
                .get_or_insert_with(|| Rc::new(Scheduler::new()))
                .clone(),
        )
    }

    /// Records `ngx.exit` in a timer callback: the callback and its
    /// threads end.
    pub fn exit(&self) {
        self.exited.set(true);
    }

    /// Whether a timer callback (or one of its threads) called `ngx.exit`.
    pub fn exited(&self) -> bool {
        self.exited.get()
    }

    /// The scheduler of the running phase, if a thread was spawned in it.
    pub fn existing(&self) -> Option<Rc<Scheduler>> {
        self.scheduler.borrow().clone()
    }
}

/// What a user thread is.
enum State {
    /// Not finished (running, waiting on I/O or posted).
    Running,
    /// Finished while its parent is alive and not waiting on it: its
    /// results wait for `ngx.thread.wait`.
    Zombie(ThreadRun),
    /// Waited for, killed, or finished with its parent gone.
    Dead,
}

/// One user thread.
struct Slot {
    /// Its coroutine (what `spawn` returns; identity for `wait`, `kill`
    /// and `coroutine.status`).
    co: Thread,
    /// The thread that spawned it.
    parent: usize,
    /// The coroutine that called `spawn` (only it may wait or kill).
    parent_co: *const std::ffi::c_void,
    state: State,
    /// Its parent is waiting on it.
    waited: bool,
    /// Its future; taken out while it is polled.
    future: Option<ThreadFuture>,
    waker: Waker,
}

/// The run queue, shared with the threads' wakers (which must be `Send`).
struct Queue {
    ids: VecDeque<usize>,
    /// The waker of the task driving the phase.
    driver: Option<Waker>,
}

/// Queues its thread and wakes the driver.
struct ThreadWaker {
    id: usize,
    queue: Arc<Mutex<Queue>>,
}

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let driver = {
            let Ok(mut q) = self.queue.lock() else {
                return;
            };
            if !q.ids.contains(&self.id) {
                q.ids.push_back(self.id);
            }
            q.driver.clone()
        };
        if let Some(w) = driver {
            w.wake();
        }
    }
}

/// A user thread as `wait`, `kill` and `coroutine.status` find it.
pub struct Found {
    id: usize,
    /// Whether the caller is the coroutine that spawned it.
    pub by_parent: bool,
}

/// What `coroutine.status` says of a user thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Alive (running, waiting, or posted).
    Running,
    /// Finished, results not yet waited for.
    Zombie,
    /// Gone.
    Dead,
}

/// The threads of one request's running phase.
pub struct Scheduler {
    /// User threads by id - 1 (id 0 is the entry thread).
    slots: RefCell<Vec<Slot>>,
    queue: Arc<Mutex<Queue>>,
    /// The thread being polled.
    current: Cell<usize>,
    /// The entry thread has not finished.
    entry_alive: Cell<bool>,
    entry_waker: Waker,
}

impl Scheduler {
    fn new() -> Scheduler {
        let queue = Arc::new(Mutex::new(Queue {
            ids: VecDeque::new(),
            driver: None,
        }));
        let entry_waker = Waker::from(Arc::new(ThreadWaker {
            id: ENTRY,
            queue: queue.clone(),
        }));
        Scheduler {
            slots: RefCell::default(),
            queue,
            current: Cell::new(ENTRY),
            entry_alive: Cell::new(true),
            entry_waker,
        }
    }

    /// Adds a user thread spawned by the running thread from coroutine
    /// `parent_co`, posts the running thread, and runs the new one until
    /// it first waits (ngx_lua's `spawn`).
    pub fn spawn(&self, co: Thread, parent_co: *const std::ffi::c_void, future: ThreadFuture) {
        let parent = self.current.get();
        let id = {
            let mut slots = self.slots.borrow_mut();
            let id = slots.len() + 1;
            slots.push(Slot {
                co,
                parent,
                parent_co,
                state: State::Running,
                waited: false,
                future: Some(future),
                waker: Waker::from(Arc::new(ThreadWaker {
                    id,
                    queue: self.queue.clone(),
                })),
            });
            id
        };
        self.post(parent, false);
        self.resume(id);
    }

    /// Queues thread `id` (first when `now`).
    fn post(&self, id: usize, now: bool) {
        if let Ok(mut q) = self.queue.lock() {
            q.ids.retain(|&i| i != id);
            if now {
                q.ids.push_front(id);
            } else {
                q.ids.push_back(id);
            }
        }
    }

    fn pop(&self) -> Option<usize> {
        self.queue.lock().ok()?.ids.pop_front()
    }

    /// Polls user thread `id` once, if it is alive.
    fn resume(&self, id: usize) {
        let taken = {
            let mut slots = self.slots.borrow_mut();
            match slots.get_mut(id - 1) {
                Some(slot) if matches!(slot.state, State::Running) => {
                    slot.future.take().map(|f| (f, slot.waker.clone()))
                }
                _ => None,
            }
        };
        let Some((mut future, waker)) = taken else {
            return;
        };
        let previous = self.current.replace(id);
        let polled = future.as_mut().poll(&mut Context::from_waker(&waker));
        self.current.set(previous);
        match polled {
            Poll::Pending => {
                if let Some(slot) = self.slots.borrow_mut().get_mut(id - 1)
                    && matches!(slot.state, State::Running)
                {
                    slot.future = Some(future);
                }
            }
            Poll::Ready(out) => {
                drop(future);
                self.finished(id, Some(out));
            }
        }
    }

    /// Thread `id` ended (`out` is a user thread's result): its zombie
    /// children die, and it becomes a zombie for its parent (which runs
    /// next if it waits on it), or dead.
    fn finished(&self, id: usize, out: Option<ThreadRun>) {
        let mut slots = self.slots.borrow_mut();
        for slot in slots.iter_mut().filter(|s| s.parent == id) {
            if matches!(slot.state, State::Zombie(_)) {
                slot.state = State::Dead;
            }
        }
        let Some(out) = out else {
            self.entry_alive.set(false);
            return;
        };
        match &out {
            Ran::Done(Err(e)) => {
                tracing::error!(target: "moongate::lua", "lua user thread aborted: {e}")
            }
            Ran::TimedOut => tracing::error!(
                target: "moongate::lua",
                "lua user thread aborted: {}",
                super::budget::TIMEOUT_MESSAGE
            ),
            _ => {}
        }
        let alive = |p: usize| {
            if p == ENTRY {
                self.entry_alive.get()
            } else {
                slots
                    .get(p - 1)
                    .is_some_and(|s| matches!(s.state, State::Running))
            }
        };
        let Some(slot) = slots.get(id - 1) else {
            return;
        };
        let (parent, waited) = (slot.parent, slot.waited);
        let state = if alive(parent) {
            State::Zombie(out)
        } else {
            State::Dead
        };
        if let Some(slot) = slots.get_mut(id - 1) {
            slot.state = state;
        }
        drop(slots);
        if waited {
            self.post(parent, true);
        }
    }

    /// The user thread whose coroutine is `co`, as the coroutine
    /// `caller` sees it.
    pub fn find(&self, co: &Thread, caller: *const std::ffi::c_void) -> Option<Found> {
        let p = co.to_pointer();
        self.slots
            .borrow()
            .iter()
            .position(|s| s.co.to_pointer() == p)
            .map(|i| Found {
                id: i + 1,
                by_parent: self.slots.borrow()[i].parent_co == caller,
            })
    }

    /// What `coroutine.status` says of `co`, if it is a user thread here.
    pub fn status(&self, co: &Thread) -> Option<Status> {
        let p = co.to_pointer();
        self.slots
            .borrow()
            .iter()
            .find(|s| s.co.to_pointer() == p)
            .map(|s| match s.state {
                State::Running => Status::Running,
                State::Zombie(_) => Status::Zombie,
                State::Dead => Status::Dead,
            })
    }

    /// The thread's status.
    pub fn status_of(&self, t: &Found) -> Status {
        match self.slots.borrow().get(t.id - 1).map(|s| &s.state) {
            Some(State::Running) => Status::Running,
            Some(State::Zombie(_)) => Status::Zombie,
            _ => Status::Dead,
        }
    }

    /// Takes a zombie's results (it is dead after).
    pub fn reap(&self, t: &Found) -> Option<ThreadRun> {
        let mut slots = self.slots.borrow_mut();
        let slot = slots.get_mut(t.id - 1)?;
        if !matches!(slot.state, State::Zombie(_)) {
            return None;
        }
        slot.waited = false;
        match std::mem::replace(&mut slot.state, State::Dead) {
            State::Zombie(out) => Some(out),
            _ => None,
        }
    }

    /// Marks whether the thread's parent waits on it.
    pub fn set_waited(&self, t: &Found, waited: bool) {
        if let Some(slot) = self.slots.borrow_mut().get_mut(t.id - 1) {
            slot.waited = waited;
        }
    }

    /// Kills a thread (`ngx.thread.kill`): dead at once, its pending
    /// operation dropped.
    pub fn kill(&self, t: &Found) {
        let future = {
            let mut slots = self.slots.borrow_mut();
            let Some(slot) = slots.get_mut(t.id - 1) else {
                return;
            };
            slot.state = State::Dead;
            slot.future.take()
        };
        drop(future);
        self.finished_children(t.id);
    }

    /// A killed thread's zombie children die with it.
    fn finished_children(&self, id: usize) {
        for slot in self
            .slots
            .borrow_mut()
            .iter_mut()
            .filter(|s| s.parent == id)
        {
            if matches!(slot.state, State::Zombie(_)) {
                slot.state = State::Dead;
            }
        }
    }

    /// User threads not finished.
    fn running(&self) -> usize {
        self.slots
            .borrow()
            .iter()
            .filter(|s| matches!(s.state, State::Running))
            .count()
    }

    /// Drops every thread (the phase is over).
    fn abort_all(&self) {
        let futures: Vec<_> = self
            .slots
            .borrow_mut()
            .iter_mut()
            .filter_map(|s| {
                s.state = State::Dead;
                s.future.take()
            })
            .collect();
        drop(futures);
    }
}

/// Runs `entry` (a phase handler, or a timer callback) and the light
/// threads it spawns into `light` until it is over: all have finished
/// (the entry thread's result is returned), one called `ngx.exit`
/// (`exited()` says so; `Ran::Exited`, the others are dropped where they
/// wait), or the entry thread failed.
pub async fn drive<F>(
    light: &LightThreads,
    exited: impl Fn() -> bool,
    entry: F,
) -> Ran<mlua::Result<()>>
where
    F: Future<Output = Ran<mlua::Result<()>>>,
{
    // Whether the phase ends or is abandoned (the client went away), its
    // threads go: they hold the request, which holds them.
    let _threads = Abandon(light);
    let mut entry = std::pin::pin!(entry);
    let mut ended: Option<Ran<mlua::Result<()>>> = None;
    std::future::poll_fn(|cx| {
        light.driving.set(true);
        let out = step(light, &exited, entry.as_mut(), &mut ended, cx);
        light.driving.set(false);
        out
    })
    .await
}

/// Drops the threads of a phase when it ends or is dropped.
struct Abandon<'l>(&'l LightThreads);

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        self.0.driving.set(false);
        let scheduler = self.0.scheduler.borrow_mut().take();
        if let Some(s) = scheduler {
            s.abort_all();
        }
    }
}

/// One poll of [`drive`].
fn step<F>(
    light: &LightThreads,
    exited: &impl Fn() -> bool,
    mut entry: Pin<&mut F>,
    ended: &mut Option<Ran<mlua::Result<()>>>,
    cx: &mut Context<'_>,
) -> Poll<Ran<mlua::Result<()>>>
where
    F: Future<Output = Ran<mlua::Result<()>>>,
{
    let scheduler = light.existing();
    let Some(s) = scheduler else {
        // No thread spawned yet: the entry thread alone, on the task's waker.
        if let Poll::Ready(out) = entry.as_mut().poll(cx) {
            *ended = Some(out);
        }
        if exited() {
            return Poll::Ready(Ran::Exited);
        }
        return match light.existing() {
            Some(s) => {
                if ended.is_some() {
                    s.entry_ended();
                }
                run(&s, exited, entry, ended, cx)
            }
            None => ended.take().map_or(Poll::Pending, Poll::Ready),
        };
    };
    run(&s, exited, entry, ended, cx)
}

impl Scheduler {
    /// The entry thread finished.
    fn entry_ended(&self) {
        if self.entry_alive.get() {
            self.finished(ENTRY, None);
        }
    }
}

/// Runs the queued threads until none is left, then says whether the
/// phase is over.
fn run<F>(
    s: &Scheduler,
    exited: &impl Fn() -> bool,
    mut entry: Pin<&mut F>,
    ended: &mut Option<Ran<mlua::Result<()>>>,
    cx: &mut Context<'_>,
) -> Poll<Ran<mlua::Result<()>>>
where
    F: Future<Output = Ran<mlua::Result<()>>>,
{
    if let Ok(mut q) = s.queue.lock()
        && !q.driver.as_ref().is_some_and(|w| w.will_wake(cx.waker()))
    {
        q.driver = Some(cx.waker().clone());
    }
    loop {
        // ngx.exit (exec, redirect) in any thread, or the entry thread's
        // failure, ends the phase and aborts every other thread.
        if exited() {
            s.abort_all();
            return Poll::Ready(Ran::Exited);
        }
        if matches!(ended, Some(Ran::Done(Err(_)) | Ran::TimedOut | Ran::Exited)) {
            s.abort_all();
            return ended.take().map_or(Poll::Pending, Poll::Ready);
        }
        let Some(id) = s.pop() else { break };
        if id != ENTRY {
            s.resume(id);
            continue;
        }
        if ended.is_some() {
            continue;
        }
        let previous = s.current.replace(ENTRY);
        let polled = entry
            .as_mut()
            .poll(&mut Context::from_waker(&s.entry_waker));
        s.current.set(previous);
        if let Poll::Ready(out) = polled {
            *ended = Some(out);
            s.entry_ended();
        }
    }
    if ended.is_some() && s.running() == 0 {
        return ended.take().map_or(Poll::Pending, Poll::Ready);
    }
    Poll::Pending
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::future::Future;
    use std::rc::Rc;
    use std::task::Poll;
    use std::time::Duration;

    use mlua::{Lua, MultiValue};

    use super::{LightThreads, Ran, ThreadRun, drive};

    type Log = Rc<RefCell<Vec<&'static str>>>;

    /// Pending once without a wake-up: what `spawn` does to its parent
    /// (the scheduler posted it).
    fn posted() -> impl Future<Output = ()> {
        let mut done = false;
        std::future::poll_fn(move |_| {
            if std::mem::replace(&mut done, true) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }

    /// `spawn` as `ngx.thread.spawn` does it, with `f` as the thread.
    async fn spawn(light: &LightThreads, lua: &Lua, f: impl Future<Output = ThreadRun> + 'static) {
        let co = lua
            .create_thread(lua.create_function(|_, ()| Ok(())).expect("function"))
            .expect("thread");
        let s = light.scheduler().expect("spawned while driven");
        s.spawn(co, std::ptr::null(), Box::pin(f));
        drop(s);
        posted().await;
    }

    fn done() -> ThreadRun {
        Ran::Done(Ok(MultiValue::new()))
    }

    /// Sets a flag when dropped (a thread aborted where it waits).
    struct Dropped(Rc<Cell<bool>>);

    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn spawn_runs_the_child_then_the_posted_threads_in_order() {
        let lua = Lua::new();
        let light = Rc::new(LightThreads::default());
        let log: Log = Rc::default();
        let (l, lg, lu) = (light.clone(), log.clone(), lua.clone());
        let entry = async move {
            lg.borrow_mut().push("e1");
            let (l2, lg2, lu2) = (l.clone(), lg.clone(), lu.clone());
            spawn(&l, &lu, async move {
                lg2.borrow_mut().push("a1");
                let lg3 = lg2.clone();
                spawn(&l2, &lu2, async move {
                    lg3.borrow_mut().push("b1");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    lg3.borrow_mut().push("b2");
                    done()
                })
                .await;
                lg2.borrow_mut().push("a2");
                done()
            })
            .await;
            lg.borrow_mut().push("e2");
            Ran::Done(Ok(()))
        };
        let out = drive(&light, || false, entry).await;
        assert!(matches!(out, Ran::Done(Ok(()))));
        assert_eq!(*log.borrow(), ["e1", "a1", "b1", "e2", "a2", "b2"]);
        assert!(light.existing().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn an_exit_in_one_thread_ends_the_phase_and_drops_the_others() {
        let lua = Lua::new();
        let light = Rc::new(LightThreads::default());
        let exited = Rc::new(Cell::new(false));
        let other_dropped = Rc::new(Cell::new(false));
        let (l, lu, ex, od) = (
            light.clone(),
            lua.clone(),
            exited.clone(),
            other_dropped.clone(),
        );
        let entry = async move {
            spawn(&l, &lu, async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                ex.set(true);
                std::future::pending::<ThreadRun>().await
            })
            .await;
            spawn(&l, &lu, async move {
                let _guard = Dropped(od);
                tokio::time::sleep(Duration::from_secs(60)).await;
                done()
            })
            .await;
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ran::Done(Ok(()))
        };
        let started = tokio::time::Instant::now();
        let out = drive(&light, || exited.get(), entry).await;
        assert!(matches!(out, Ran::Exited));
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(other_dropped.get());
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_phase_drops_its_threads() {
        let lua = Lua::new();
        let light = Rc::new(LightThreads::default());
        let dropped = Rc::new(Cell::new(false));
        let (l, lu, d) = (light.clone(), lua.clone(), dropped.clone());
        let entry = async move {
            spawn(&l, &lu, async move {
                let _guard = Dropped(d);
                tokio::time::sleep(Duration::from_secs(60)).await;
                done()
            })
            .await;
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ran::Done(Ok(()))
        };
        let run = drive(&light, || false, entry);
        let cut = tokio::time::timeout(Duration::from_millis(10), run).await;
        assert!(cut.is_err());
        assert!(dropped.get());
        assert!(light.existing().is_none());
    }
}
