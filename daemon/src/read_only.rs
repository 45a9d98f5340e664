//! `Set` on a read-only property must answer `org.freedesktop.DBus.Error.PropertyReadOnly` (D-Bus
//! specification, org.freedesktop.DBus.Properties). zbus answers `UnknownProperty` for a property
//! that has no setter, which tells an HMI developer the name is wrong when it is not. `ReadOnly<I>`
//! serves an interface whose properties are all read-only (every one of ours: the daemon's state
//! changes only through its methods) and answers `Set` of any of them with `PropertyReadOnly`;
//! everything else is the wrapped interface's own.

use std::collections::HashMap;
use std::fmt::Write;

use zbus::message::Header;
use zbus::names::{InterfaceName, MemberName};
use zbus::object_server::{DispatchResult, Interface, SignalEmitter};
use zbus::zvariant::{OwnedVariant, Variant};
use zbus::{BoxDBusError, Connection, Message, ObjectServer, fdo};

/// An interface served with read-only properties (see the module doc).
pub struct ReadOnly<I>(pub I);

#[async_trait::async_trait]
impl<I: Interface> Interface for ReadOnly<I> {
    fn name() -> InterfaceName<'static> {
        I::name()
    }

    fn spawn_tasks_for_methods(&self) -> bool {
        self.0.spawn_tasks_for_methods()
    }

    async fn get(
        &self,
        property_name: &str,
        server: &ObjectServer,
        connection: &Connection,
        header: Option<&Header<'_>>,
        emitter: &SignalEmitter<'_>,
    ) -> Option<Result<OwnedVariant, BoxDBusError>> {
        self.0
            .get(property_name, server, connection, header, emitter)
            .await
    }

    async fn get_all(
        &self,
        server: &ObjectServer,
        connection: &Connection,
        header: Option<&Header<'_>>,
        emitter: &SignalEmitter<'_>,
    ) -> fdo::Result<HashMap<String, OwnedVariant>> {
        self.0.get_all(server, connection, header, emitter).await
    }

    fn set<'call>(
        &'call self,
        property_name: &'call str,
        _value: &'call Variant<'_>,
        server: &'call ObjectServer,
        connection: &'call Connection,
        header: Option<&'call Header<'_>>,
        emitter: &'call SignalEmitter<'_>,
    ) -> DispatchResult<'call> {
        DispatchResult::Async(Box::pin(async move {
            let exists = self
                .0
                .get(property_name, server, connection, header, emitter)
                .await
                .is_some();
            let e = if exists {
                fdo::Error::PropertyReadOnly(format!("property '{property_name}' is read-only"))
            } else {
                fdo::Error::UnknownProperty(format!("Unknown property '{property_name}'"))
            };
            Err(e.into())
        }))
    }

    async fn set_mut(
        &mut self,
        property_name: &str,
        value: &Variant<'_>,
        server: &ObjectServer,
        connection: &Connection,
        header: Option<&Header<'_>>,
        emitter: &SignalEmitter<'_>,
    ) -> Option<Result<(), BoxDBusError>> {
        // Not reached: `set` always answers. Kept as the wrapped interface's own.
        self.0
            .set_mut(property_name, value, server, connection, header, emitter)
            .await
    }

    fn call<'call>(
        &'call self,
        server: &'call ObjectServer,
        connection: &'call Connection,
        msg: &'call Message,
        name: MemberName<'call>,
    ) -> DispatchResult<'call> {
        self.0.call(server, connection, msg, name)
    }

    fn call_mut<'call>(
        &'call mut self,
        server: &'call ObjectServer,
        connection: &'call Connection,
        msg: &'call Message,
        name: MemberName<'call>,
    ) -> DispatchResult<'call> {
        self.0.call_mut(server, connection, msg, name)
    }

    fn introspect_to_writer(&self, writer: &mut dyn Write, level: usize) {
        self.0.introspect_to_writer(writer, level)
    }
}
