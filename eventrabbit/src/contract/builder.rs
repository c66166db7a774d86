//! [`AsyncApi`]: the AsyncAPI 3.1 document of this service, from its registered handlers
//! and producers and the queues it consumes.

use super::document::AsyncApiDocument;
use super::example::example;
use super::ids::{Keys, reference, sanitize};
use super::messages::{Role, example_payload, message};
use crate::config::{ConsumeChannel, ExchangeKind};
use crate::error::Result;
use crate::handler::registration::{self, Registration};
use crate::handler::registry;
use crate::handler::schema::unknown_schema;
use schemars::SchemaGenerator;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// Builds the AsyncAPI 3.1 document of this service: a channel per consumed queue (with
/// its bindings), per exchange it publishes to and per queue's RPC replies; an operation
/// per action received (with its reply), per `#[producer]` and per `#[function]` result;
/// and each message's envelope, headers, payload JSON Schema and an example.
///
/// Payload schemas come from the handlers' parameter and return types and the producers'
/// return types: a type implementing [`schemars::JsonSchema`] is described exactly; any
/// other gets an open schema saying so. A handler's parameters make an object with one
/// property each, required unless of `Option` type.
///
/// ```
/// use eventrabbit::contract::AsyncApi;
/// use eventrabbit::{ConsumeChannel, ExchangeKind};
///
/// let document = AsyncApi::new("email-service", "1.4.0")
///     .description("Sends the emails of the shop.")
///     .server("production", "rabbitmq.internal:5672")
///     .consumes(ConsumeChannel::new("email_queue").exchange("user", ExchangeKind::Fanout))
///     .build()?;
/// let json: String = document.to_json();
/// let yaml: String = document.to_yaml();
/// let html: String = document.to_html();
/// # assert!(json.contains("\"3.1.0\"") && yaml.contains("asyncapi") && html.contains("email-service"));
/// # Ok::<(), eventrabbit::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct AsyncApi {
    title: String,
    version: String,
    description: Option<String>,
    servers: Vec<(String, String, Option<String>)>,
    queues: Vec<ConsumeChannel>,
}

impl AsyncApi {
    /// The document of the service `title` at `version`.
    #[must_use]
    pub fn new(title: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            version: version.into(),
            description: None,
            servers: Vec::new(),
            queues: Vec::new(),
        }
    }

    /// What the service does (CommonMark).
    #[must_use]
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// A broker the service runs against, as `host[:port]` (AMQP).
    #[must_use]
    pub fn server(mut self, name: impl Into<String>, host: impl Into<String>) -> Self {
        self.servers.push((name.into(), host.into(), None));
        self
    }

    /// A broker with its virtual host (`pathname`, such as `/orders`).
    #[must_use]
    pub fn server_with_vhost(
        mut self,
        name: impl Into<String>,
        host: impl Into<String>,
        vhost: impl Into<String>,
    ) -> Self {
        self.servers
            .push((name.into(), host.into(), Some(vhost.into())));
        self
    }

    /// A queue the service consumes, as given to [`Handle::consume`](crate::Handle::consume):
    /// its handlers (all registered ones, or its [`ConsumeChannel::actions`]) are
    /// documented as received there.
    #[must_use]
    pub fn consumes(mut self, channel: ConsumeChannel) -> Self {
        self.queues.push(channel);
        self
    }

    /// The document. Fails as [`Handle::consume`](crate::Handle::consume) would on a
    /// queue naming an action no handler serves ([`Error::UnknownAction`](crate::Error::UnknownAction))
    /// or whose patterns overlap, and on two handlers of one action.
    pub fn build(&self) -> Result<AsyncApiDocument> {
        let mut parts = Parts {
            generator: SchemaSettings::draft07()
                .with(|s| s.definitions_path = "/components/schemas".into())
                .into_generator(),
            ..Parts::default()
        };
        for queue in &self.queues {
            let routes = registry::routes(&queue.queue, queue.handling.actions())?;
            parts.queue(queue, routes.iter());
        }
        for producer in registration::producers() {
            let data = (producer.payload)(&mut parts.generator).to_value();
            let summary = format!("published by the producer `{}`", producer.name);
            let target = parts.exchange(producer.exchange, producer.key, None);
            parts.send(&target, producer.action, data, summary, producer.name);
        }
        Ok(AsyncApiDocument::from_value(self.assemble(parts)))
    }

    fn assemble(&self, parts: Parts) -> Value {
        let Parts {
            mut generator,
            mut channels,
            operations,
            messages,
            kinds,
        } = parts;
        // An exchange's kind, known from a queue's binding, holds for all its channels.
        for channel in channels.values_mut() {
            // (`pointer_mut`: indexing a `Value` would add the keys it looks for.)
            if let Some(exchange) = channel.value.pointer_mut("/bindings/amqp/exchange")
                && let Some(kind) = exchange["name"].as_str().and_then(|n| kinds.get(n))
            {
                exchange["type"] = kind_name(*kind).into();
            }
        }
        let (schemas, renames) = schema_components(&mut generator);
        let mut components_messages = Map::new();
        for (key, (action, role, mut message)) in messages.into_entries() {
            rename_refs(&mut message, &renames);
            let data = &message["payload"]["properties"]["data"];
            let payload = example_payload(&action, role, example(data, &schemas));
            message["examples"] = json!([{ "name": "example", "payload": payload }]);
            components_messages.insert(key, message);
        }
        let mut info = json!({ "title": self.title, "version": self.version });
        if let Some(d) = &self.description {
            info["description"] = d.clone().into();
        }
        let mut document = json!({
            "asyncapi": "3.1.0",
            "info": info,
            "defaultContentType": "application/json",
        });
        if !self.servers.is_empty() {
            let servers: Map<String, Value> = self
                .servers
                .iter()
                .map(|(name, host, vhost)| {
                    let mut server =
                        json!({ "host": host, "protocol": "amqp", "protocolVersion": "0.9.1" });
                    if let Some(vhost) = vhost {
                        server["pathname"] = vhost.clone().into();
                    }
                    (sanitize(name), server)
                })
                .collect();
            document["servers"] = Value::Object(servers);
        }
        document["channels"] =
            Value::Object(channels.into_iter().map(|(k, c)| (k, c.value)).collect());
        document["operations"] = Value::Object(operations.into_entries().collect());
        document["components"] = json!({ "messages": components_messages, "schemas": schemas });
        document
    }
}

/// A channel being filled in.
#[derive(Debug)]
struct Channel {
    value: Value,
}

impl Channel {
    fn add_message(&mut self, key: &str) {
        let messages = self.value["messages"]
            .as_object_mut()
            .expect("channels are made with a messages map");
        messages.insert(key.to_owned(), reference(&["components", "messages", key]));
    }
}

#[derive(Default)]
struct Parts {
    generator: SchemaGenerator,
    channels: BTreeMap<String, Channel>,
    operations: Keys<Value>,
    /// Each message's action and role beside it.
    messages: Keys<(String, Role, Value)>,
    /// The kinds of the exchanges queues are bound to.
    kinds: BTreeMap<String, ExchangeKind>,
}

impl Parts {
    /// The handlers of `queue`: a receive operation each, with its RPC reply.
    fn queue<'a>(
        &mut self,
        queue: &ConsumeChannel,
        handlers: impl Iterator<Item = &'a Registration>,
    ) {
        let name = queue.queue.as_str();
        let id = format!("queue.{}", sanitize(name));
        let bindings: Vec<Value> = queue
            .bindings
            .iter()
            .map(|b| json!({ "exchange": b.exchange, "type": kind_name(b.kind), "routingKey": b.key_for(name) }))
            .collect();
        let mut description = format!(
            "The queue `{name}`, consumed by this service; messages failing for good go to `{name}.dlq` with the reason in `x-dead-letter-reason`."
        );
        for b in &queue.bindings {
            let key = match b.key_for(name) {
                "" => String::new(),
                key => format!(" with key `{key}`"),
            };
            description.push_str(&format!(
                "\n\nBound to the {} exchange `{}`{key}.",
                kind_name(b.kind),
                b.exchange,
            ));
        }
        let mut channel = json!({
            "address": name,
            "title": format!("queue {name}"),
            "description": description,
            "messages": {},
            "bindings": { "amqp": {
                "is": "queue",
                "queue": {
                    "name": name,
                    "durable": queue.durable.unwrap_or(true),
                    "exclusive": queue.exclusive,
                    "autoDelete": queue.auto_delete,
                },
                "bindingVersion": "0.3.0",
            }},
            "x-eventrabbit-bindings": bindings,
        });
        if let Some(t) = queue.queue_type {
            channel["x-eventrabbit-queue-type"] = format!("{t:?}").to_lowercase().into();
        }
        self.channels.insert(id.clone(), Channel { value: channel });
        for b in &queue.bindings {
            self.exchange(&b.exchange, b.key_for(name), Some(b.kind));
        }
        let reply_id = format!("replies.{}", sanitize(name));
        for reg in handlers {
            self.handler(&id, &reply_id, name, reg);
        }
    }

    fn handler(&mut self, channel: &str, reply_channel: &str, queue: &str, reg: &Registration) {
        let (data, reply) = match reg.shapes {
            Some(shapes) => (
                (shapes.data)(&mut self.generator),
                (shapes.reply)(&mut self.generator),
            ),
            None => (
                unknown_schema(&mut self.generator),
                unknown_schema(&mut self.generator),
            ),
        };
        let (data, reply) = (data.to_value(), reply.to_value());
        let summary = format!("handled by `{}` on the queue `{queue}`", reg.name);
        let received = message(reg.action, Role::Received, data, summary.clone());
        let key = self.messages.key_for(
            &format!("{}.received", reg.action),
            (reg.action.to_owned(), Role::Received, received),
        );
        self.channel_mut(channel).add_message(&key);
        let replied = message(
            reg.action,
            Role::Reply,
            reply.clone(),
            format!("the reply of `{}`", reg.name),
        );
        let reply_key = self.messages.key_for(
            &format!("{}.reply", reg.action),
            (reg.action.to_owned(), Role::Reply, replied),
        );
        self.reply_channel(reply_channel, queue)
            .add_message(&reply_key);
        let mut operation = json!({
            "action": "receive",
            "channel": reference(&["channels", channel]),
            "title": reg.action,
            "summary": summary,
            "messages": [reference(&["channels", channel, "messages", &key])],
            "reply": {
                "address": {
                    "location": "$message.header#/reply_to",
                    "description": "the request's AMQP reply_to property (RPC callers set it)",
                },
                "channel": reference(&["channels", reply_channel]),
                "messages": [reference(&["channels", reply_channel, "messages", &reply_key])],
            },
            "bindings": { "amqp": { "ack": true, "bindingVersion": "0.3.0" } },
            "x-eventrabbit-handler": reg.name,
        });
        if let Some((spec, _)) = &reg.batch {
            operation["x-eventrabbit-batch"] =
                json!({ "max": spec.max(), "windowMs": spec.window().as_millis() as u64 });
        }
        self.operations.key_for(&short_name(reg.name), operation);
        if let Some(target) = reg.publish {
            let exchange = self.exchange(target.exchange, target.key, None);
            let summary = format!(
                "the result of `{}`, published after each message it handles",
                reg.name
            );
            self.send(
                &exchange,
                target.action,
                reply,
                summary,
                &format!("{}.result", reg.name),
            );
        }
    }

    /// A send operation of `action` to the exchange channel `channel`.
    fn send(&mut self, channel: &str, action: &str, data: Value, summary: String, name: &str) {
        let sent = message(action, Role::Sent, data, summary.clone());
        let key = self.messages.key_for(
            &format!("{action}.sent"),
            (action.to_owned(), Role::Sent, sent),
        );
        self.channel_mut(channel).add_message(&key);
        let operation = json!({
            "action": "send",
            "channel": reference(&["channels", channel]),
            "title": action,
            "summary": summary,
            "messages": [reference(&["channels", channel, "messages", &key])],
            "bindings": { "amqp": { "deliveryMode": 2, "bindingVersion": "0.3.0" } },
            "x-eventrabbit-producer": name,
        });
        self.operations.key_for(&short_name(name), operation);
    }

    /// The channel of `exchange` with routing key `key`, made on first use.
    fn exchange(&mut self, exchange: &str, key: &str, kind: Option<ExchangeKind>) -> String {
        let id = if key.is_empty() {
            format!("exchange.{}", sanitize(exchange))
        } else {
            format!("exchange.{}.{}", sanitize(exchange), sanitize(key))
        };
        self.channels.entry(id.clone()).or_insert_with(|| {
            let shown = if exchange.is_empty() {
                "(default)"
            } else {
                exchange
            };
            Channel {
                value: json!({
                    "address": if key.is_empty() { shown } else { key },
                    "title": if key.is_empty() {
                        format!("exchange {shown}")
                    } else {
                        format!("exchange {shown}, routing key `{key}`")
                    },
                    "messages": {},
                    "bindings": { "amqp": {
                        "is": "routingKey",
                        "exchange": { "name": exchange },
                        "bindingVersion": "0.3.0",
                    }},
                }),
            }
        });
        if let Some(kind) = kind {
            self.kinds.insert(exchange.to_owned(), kind);
        }
        id
    }

    fn reply_channel(&mut self, id: &str, queue: &str) -> &mut Channel {
        self.channels.entry(id.to_owned()).or_insert_with(|| Channel {
            value: json!({
                "address": null,
                "title": format!("replies of {queue}"),
                "description": format!("RPC replies of the handlers on `{queue}`, sent through the default exchange to each request's `reply_to` queue."),
                "messages": {},
            }),
        })
    }

    fn channel_mut(&mut self, id: &str) -> &mut Channel {
        self.channels
            .get_mut(id)
            .expect("the channel is made before its messages")
    }
}

fn kind_name(kind: ExchangeKind) -> &'static str {
    match kind {
        ExchangeKind::Direct => "direct",
        ExchangeKind::Fanout => "fanout",
        ExchangeKind::Topic => "topic",
        ExchangeKind::Headers => "headers",
        ExchangeKind::ConsistentHash => "x-consistent-hash",
    }
}

/// `crate::module::send_email` → `send_email`.
fn short_name(path: &str) -> String {
    path.rsplit("::").next().unwrap_or(path).to_owned()
}

/// The named schemas the payloads use, under keys a component allows (their references
/// rewritten to match), and the renames made (for the references outside them).
fn schema_components(
    generator: &mut SchemaGenerator,
) -> (Map<String, Value>, BTreeMap<String, String>) {
    let definitions = generator.take_definitions(true);
    let renames: BTreeMap<String, String> = definitions
        .keys()
        .map(|k| (k.clone(), sanitize(k)))
        .filter(|(k, v)| k != v)
        .collect();
    let mut schemas = Map::new();
    for (name, mut schema) in definitions {
        rename_refs(&mut schema, &renames);
        let key = renames.get(&name).cloned().unwrap_or(name);
        schemas.insert(key, schema);
    }
    (schemas, renames)
}

fn rename_refs(value: &mut Value, renames: &BTreeMap<String, String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get_mut("$ref")
                && let Some(name) = target.strip_prefix("#/components/schemas/")
                && let Some(new) = renames.get(name)
            {
                *target = format!("#/components/schemas/{new}");
            }
            map.values_mut().for_each(|v| rename_refs(v, renames));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rename_refs(v, renames)),
        _ => {}
    }
}
