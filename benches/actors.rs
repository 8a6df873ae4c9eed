//! Actor round trips: the floor under every BoxOffice request.
//!
//! * `ractor_call/trivial_actor`: a ractor `call` to an actor that only answers, on the
//!   multi-thread tokio runtime `boxoffice serve` uses: the raw cost of request/reply.
//! * `runtime/get_ticket_live`: `Runtime::get_ticket` on a live ticket actor: the directory
//!   lookup, admission (depth counter), the ractor call and the clone of the state, i.e. what
//!   `GET /api/tickets/:id` costs below HTTP.
//!
//! Run with `cargo bench --bench actors` (release profile); `bench/run` prints the figures next
//! to the HTTP ones.

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use boxoffice::actors::{DirectoryConfig, RequestContext, Runtime, RuntimeConfig};
use boxoffice::domain::{Price, Title, UserId};
use boxoffice::metrics::Metrics;
use boxoffice::payments::SandboxGateway;
use boxoffice::store::EmbeddedStore;
use boxoffice::timers::EmbeddedTimers;

/// An actor that answers every call with the number it was sent plus one.
struct Echo;

enum EchoMsg {
    Ping(u64, RpcReplyPort<u64>),
}

impl Actor for Echo {
    type Msg = EchoMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<EchoMsg>,
        _args: (),
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<EchoMsg>,
        message: EchoMsg,
        _state: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match message {
            EchoMsg::Ping(value, reply) => {
                let _ = reply.send(value + 1);
            }
        }
        Ok(())
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn ractor_call(criterion: &mut Criterion) {
    let tokio = runtime();
    let (actor, handle) =
        tokio.block_on(async { Actor::spawn(None, Echo, ()).await.expect("spawn echo") });
    criterion.bench_function("ractor_call/trivial_actor", |bencher| {
        bencher.to_async(&tokio).iter(|| {
            let actor = actor.clone();
            async move {
                let answer = actor
                    .call(|reply| EchoMsg::Ping(41, reply), None)
                    .await
                    .expect("call");
                assert!(answer.is_success());
            }
        });
    });
    actor.stop(None);
    let _ = tokio.block_on(handle);
}

fn runtime_get_ticket(criterion: &mut Criterion) {
    let tokio = runtime();
    let data = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(EmbeddedStore::open(data.path()).expect("open store"));
    let config = RuntimeConfig {
        order_ttl: Duration::from_secs(900),
        directory: DirectoryConfig {
            shards: 256,
            mailbox_limit: 1000,
            passivate_after: Duration::from_secs(3600),
            max_live: 200_000,
        },
        call_timeout: Duration::from_secs(10),
        hold_grace: Duration::from_secs(5),
        test_hooks: false,
        is_single_node: true,
    };
    let (runtime, _background) = Runtime::new(
        config,
        store,
        Arc::new(EmbeddedTimers::new()),
        Arc::new(SandboxGateway::new()),
        Arc::new(Metrics::new()),
    );
    let owner = UserId::parse("0123456789abcdef01234567").expect("user id");
    let ticket = tokio
        .block_on(runtime.create_ticket(
            owner,
            Title::parse("Bench seat").expect("title"),
            Price::parse_decimal("12.50").expect("price"),
            RequestContext::default(),
        ))
        .expect("create ticket");
    criterion.bench_function("runtime/get_ticket_live", |bencher| {
        bencher.to_async(&tokio).iter(|| {
            let runtime = runtime.clone();
            async move {
                let read = runtime.get_ticket(ticket.id).await.expect("get ticket");
                assert_eq!(read.version, 0);
            }
        });
    });
    tokio.block_on(runtime.shutdown());
}

criterion_group!(benches, ractor_call, runtime_get_ticket);
criterion_main!(benches);
