//! Kafka's security administration: access control lists (KIP-140) and SCRAM credentials
//! (KIP-554), through librdkafka's admin API.
//!
//! rust-rdkafka wraps topics and configs but not these, so this one module calls librdkafka's C
//! functions itself: it is the only `unsafe` code of lienthong. Every call follows the same
//! pattern (build the request objects, call, wait for the result event on a queue of its own,
//! read it, destroy everything), and every native object is owned by a guard that destroys it
//! on every path. The client is made from the same [`KafkaConfig`] as every other client, so
//! the admin connection carries the same TLS and SASL settings.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char};
use std::time::Duration;

use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka_sys as rd;

use crate::acl::{Acl, Operation, Pattern, Permission, Resource};
use crate::{BusError, KafkaConfig};

/// An admin client and its own result queue.
pub(crate) struct Admin {
    client: AdminClient<DefaultClientContext>,
    queue: *mut rd::rd_kafka_queue_t,
    timeout: Duration,
}

impl Drop for Admin {
    fn drop(&mut self) {
        // SAFETY: created by rd_kafka_queue_new in `Admin::new`, destroyed once, before the
        // client it belongs to (fields drop after this).
        unsafe { rd::rd_kafka_queue_destroy(self.queue) };
    }
}

/// A native object destroyed when the guard goes.
struct Owned<T> {
    ptr: *mut T,
    destroy: unsafe extern "C" fn(*mut T),
}

impl<T> Drop for Owned<T> {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: `ptr` came from the constructor matching `destroy` and is not used after.
            unsafe { (self.destroy)(self.ptr) };
        }
    }
}

fn cstring(what: &str, s: &str) -> Result<CString, BusError> {
    CString::new(s).map_err(|_| BusError::Invalid(format!("{what} {s:?} holds a NUL byte")))
}

/// # Safety
/// `p` is null or a NUL-terminated string that lives while the result is used.
unsafe fn text(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: the caller's promise.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

/// An `rd_kafka_error_t` as our error (None when there is none).
///
/// # Safety
/// `e` is null or a valid error object.
unsafe fn error(e: *const rd::rd_kafka_error_t, what: &str) -> Option<BusError> {
    if e.is_null() {
        return None;
    }
    // SAFETY: non-null valid error object (the caller's promise).
    let (code, message) = unsafe {
        (
            rd::rd_kafka_error_code(e),
            text(rd::rd_kafka_error_string(e)),
        )
    };
    // Some results carry an error object that says "no error".
    if code == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        return None;
    }
    Some(refusal(code, what, message))
}

fn refusal(code: rd::rd_kafka_resp_err_t, what: &str, message: String) -> BusError {
    use rd::rd_kafka_resp_err_t as E;
    let denied = matches!(
        code,
        E::RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED
            | E::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED
            | E::RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED
            | E::RD_KAFKA_RESP_ERR_SASL_AUTHENTICATION_FAILED
            | E::RD_KAFKA_RESP_ERR__AUTHENTICATION
    );
    if denied {
        BusError::Denied(format!("{what}: {message}"))
    } else {
        BusError::Admin(format!("{what}: {message} ({code:?})"))
    }
}

impl Admin {
    pub(crate) fn new(config: &KafkaConfig, timeout: Duration) -> Result<Admin, BusError> {
        let client: AdminClient<DefaultClientContext> =
            config.admin().create().map_err(|source| BusError::Kafka {
                bootstrap: config.bootstrap.clone(),
                source,
            })?;
        // SAFETY: the client's handle is valid while `client` lives, which outlives the queue.
        let queue = unsafe { rd::rd_kafka_queue_new(client.inner().native_ptr()) };
        Ok(Admin {
            client,
            queue,
            timeout,
        })
    }

    fn rk(&self) -> *mut rd::rd_kafka_t {
        self.client.inner().native_ptr()
    }

    fn options(&self, op: rd::rd_kafka_admin_op_t) -> Owned<rd::rd_kafka_AdminOptions_t> {
        // SAFETY: a valid handle; the options are destroyed by the guard.
        let ptr = unsafe { rd::rd_kafka_AdminOptions_new(self.rk(), op) };
        let mut errstr = [0 as c_char; 256];
        let ms = i32::try_from(self.timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: valid options; errstr is large enough and its size is passed.
        unsafe {
            rd::rd_kafka_AdminOptions_set_request_timeout(
                ptr,
                ms,
                errstr.as_mut_ptr(),
                errstr.len(),
            )
        };
        Owned {
            ptr,
            destroy: rd::rd_kafka_AdminOptions_destroy,
        }
    }

    /// Wait for the result of the request just made on this admin's queue.
    fn result(&self, what: &str) -> Result<Owned<rd::rd_kafka_event_t>, BusError> {
        // A little more than the request timeout: librdkafka answers with a timeout error itself.
        let ms = i32::try_from(self.timeout.as_millis() + 5_000).unwrap_or(i32::MAX);
        // SAFETY: our queue; the event is destroyed by the guard.
        let event = unsafe { rd::rd_kafka_queue_poll(self.queue, ms) };
        if event.is_null() {
            return Err(BusError::Admin(format!("{what}: no answer within {ms} ms")));
        }
        let event = Owned {
            ptr: event,
            destroy: rd::rd_kafka_event_destroy,
        };
        // SAFETY: a valid event.
        let code = unsafe { rd::rd_kafka_event_error(event.ptr) };
        if code != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            // SAFETY: a valid event; the string lives as long as the event.
            let message = unsafe { text(rd::rd_kafka_event_error_string(event.ptr)) };
            return Err(refusal(code, what, message));
        }
        Ok(event)
    }

    /// Create `acls` (creating one that exists changes nothing).
    pub(crate) fn create_acls(&mut self, acls: &[Acl]) -> Result<(), BusError> {
        if acls.is_empty() {
            return Ok(());
        }
        let bindings = acls
            .iter()
            .map(|a| binding(a, false))
            .collect::<Result<Vec<_>, _>>()?;
        let mut raw: Vec<*mut rd::rd_kafka_AclBinding_t> = bindings.iter().map(|b| b.ptr).collect();
        let options = self.options(rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_CREATEACLS);
        // SAFETY: valid handle, bindings, options and queue; librdkafka copies the bindings.
        unsafe {
            rd::rd_kafka_CreateAcls(
                self.rk(),
                raw.as_mut_ptr(),
                raw.len(),
                options.ptr,
                self.queue,
            )
        };
        let event = self.result("creating ACLs")?;
        // SAFETY: a CreateAcls result event; the array lives as long as the event.
        unsafe {
            let result = rd::rd_kafka_event_CreateAcls_result(event.ptr);
            let mut n = 0;
            let results = rd::rd_kafka_CreateAcls_result_acls(result, &mut n);
            for i in 0..n {
                if let Some(e) = error(
                    rd::rd_kafka_acl_result_error(*results.add(i)),
                    "creating an ACL",
                ) {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Every ACL the cluster holds.
    pub(crate) fn describe_acls(&mut self) -> Result<Vec<Acl>, BusError> {
        let filter = any_filter()?;
        let options = self.options(rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBEACLS);
        // SAFETY: valid handle, filter, options and queue.
        unsafe { rd::rd_kafka_DescribeAcls(self.rk(), filter.ptr, options.ptr, self.queue) };
        let event = self.result("listing ACLs")?;
        let mut out = Vec::new();
        // SAFETY: a DescribeAcls result event; the bindings live as long as the event.
        unsafe {
            let result = rd::rd_kafka_event_DescribeAcls_result(event.ptr);
            let mut n = 0;
            let acls = rd::rd_kafka_DescribeAcls_result_acls(result, &mut n);
            for i in 0..n {
                if let Some(acl) = read_binding(*acls.add(i)) {
                    out.push(acl);
                }
            }
        }
        Ok(out)
    }

    /// Delete exactly `acls`; returns how many the cluster deleted.
    pub(crate) fn delete_acls(&mut self, acls: &[Acl]) -> Result<usize, BusError> {
        if acls.is_empty() {
            return Ok(0);
        }
        let filters = acls
            .iter()
            .map(|a| binding(a, true))
            .collect::<Result<Vec<_>, _>>()?;
        let mut raw: Vec<*mut rd::rd_kafka_AclBinding_t> = filters.iter().map(|b| b.ptr).collect();
        let options = self.options(rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DELETEACLS);
        // SAFETY: valid handle, filters, options and queue; librdkafka copies the filters.
        unsafe {
            rd::rd_kafka_DeleteAcls(
                self.rk(),
                raw.as_mut_ptr(),
                raw.len(),
                options.ptr,
                self.queue,
            )
        };
        let event = self.result("deleting ACLs")?;
        let mut deleted = 0;
        // SAFETY: a DeleteAcls result event; everything read lives as long as the event.
        unsafe {
            let result = rd::rd_kafka_event_DeleteAcls_result(event.ptr);
            let mut n = 0;
            let responses = rd::rd_kafka_DeleteAcls_result_responses(result, &mut n);
            for i in 0..n {
                let response = *responses.add(i);
                if let Some(e) = error(
                    rd::rd_kafka_DeleteAcls_result_response_error(response),
                    "deleting an ACL",
                ) {
                    return Err(e);
                }
                let mut matching = 0;
                rd::rd_kafka_DeleteAcls_result_response_matching_acls(response, &mut matching);
                deleted += matching;
            }
        }
        Ok(deleted)
    }

    /// Set `user`'s SCRAM-SHA-512 credential to `password` (creating the user if new).
    pub(crate) fn upsert_scram(
        &mut self,
        user: &str,
        password: &str,
        iterations: i32,
    ) -> Result<(), BusError> {
        let name = cstring("user", user)?;
        // SAFETY: valid strings and sizes; a NULL salt makes librdkafka draw a random one. The
        // alteration is destroyed by the guard (librdkafka copies it).
        let alteration = Owned {
            ptr: unsafe {
                rd::rd_kafka_UserScramCredentialUpsertion_new(
                    name.as_ptr(),
                    rd::rd_kafka_ScramMechanism_t::RD_KAFKA_SCRAM_MECHANISM_SHA_512,
                    iterations,
                    password.as_ptr(),
                    password.len(),
                    std::ptr::null(),
                    0,
                )
            },
            destroy: rd::rd_kafka_UserScramCredentialAlteration_destroy,
        };
        self.alter_scram(alteration, user)
    }

    /// Delete `user`'s SCRAM-SHA-512 credential.
    pub(crate) fn delete_scram(&mut self, user: &str) -> Result<(), BusError> {
        let name = cstring("user", user)?;
        // SAFETY: a valid string; destroyed by the guard.
        let alteration = Owned {
            ptr: unsafe {
                rd::rd_kafka_UserScramCredentialDeletion_new(
                    name.as_ptr(),
                    rd::rd_kafka_ScramMechanism_t::RD_KAFKA_SCRAM_MECHANISM_SHA_512,
                )
            },
            destroy: rd::rd_kafka_UserScramCredentialAlteration_destroy,
        };
        self.alter_scram(alteration, user)
    }

    fn alter_scram(
        &mut self,
        alteration: Owned<rd::rd_kafka_UserScramCredentialAlteration_t>,
        user: &str,
    ) -> Result<(), BusError> {
        if alteration.ptr.is_null() {
            return Err(BusError::Invalid(format!(
                "a SCRAM credential for {user:?}"
            )));
        }
        let mut raw = [alteration.ptr];
        let options =
            self.options(rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_ALTERUSERSCRAMCREDENTIALS);
        // SAFETY: valid handle, alteration, options and queue.
        unsafe {
            rd::rd_kafka_AlterUserScramCredentials(
                self.rk(),
                raw.as_mut_ptr(),
                1,
                options.ptr,
                self.queue,
            )
        };
        let what = format!("the SCRAM credential of {user}");
        let event = self.result(&what)?;
        // SAFETY: an AlterUserScramCredentials result event; read while it lives.
        unsafe {
            let result = rd::rd_kafka_event_AlterUserScramCredentials_result(event.ptr);
            let mut n = 0;
            let responses = rd::rd_kafka_AlterUserScramCredentials_result_responses(result, &mut n);
            for i in 0..n {
                let response = *responses.add(i);
                if let Some(e) = error(
                    rd::rd_kafka_AlterUserScramCredentials_result_response_error(response),
                    &what,
                ) {
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

/// A native binding (or, with `filter`, a filter matching exactly it).
fn binding(acl: &Acl, filter: bool) -> Result<Owned<rd::rd_kafka_AclBinding_t>, BusError> {
    let name = cstring("resource", &acl.name)?;
    let principal = cstring("principal", &acl.principal)?;
    let host = cstring("host", &acl.host)?;
    let mut errstr = [0 as c_char; 512];
    let new = if filter {
        rd::rd_kafka_AclBindingFilter_new
    } else {
        rd::rd_kafka_AclBinding_new
    };
    // SAFETY: valid strings and enum values; errstr's size is passed.
    let ptr = unsafe {
        new(
            resource_type(acl.resource),
            name.as_ptr(),
            pattern_type(acl.pattern),
            principal.as_ptr(),
            host.as_ptr(),
            operation(acl.operation),
            permission(acl.permission),
            errstr.as_mut_ptr(),
            errstr.len(),
        )
    };
    if ptr.is_null() {
        // SAFETY: librdkafka wrote a NUL-terminated message into errstr.
        let message = unsafe { text(errstr.as_ptr()) };
        return Err(BusError::Invalid(format!("ACL {acl}: {message}")));
    }
    Ok(Owned {
        ptr,
        destroy: rd::rd_kafka_AclBinding_destroy,
    })
}

/// A filter matching every ACL.
fn any_filter() -> Result<Owned<rd::rd_kafka_AclBinding_t>, BusError> {
    let mut errstr = [0 as c_char; 512];
    // SAFETY: NULL name, principal and host mean "any"; errstr's size is passed.
    let ptr = unsafe {
        rd::rd_kafka_AclBindingFilter_new(
            rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_ANY,
            std::ptr::null(),
            rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_ANY,
            std::ptr::null(),
            std::ptr::null(),
            rd::rd_kafka_AclOperation_t::RD_KAFKA_ACL_OPERATION_ANY,
            rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ANY,
            errstr.as_mut_ptr(),
            errstr.len(),
        )
    };
    if ptr.is_null() {
        // SAFETY: librdkafka wrote a NUL-terminated message into errstr.
        return Err(BusError::Invalid(unsafe { text(errstr.as_ptr()) }));
    }
    Ok(Owned {
        ptr,
        destroy: rd::rd_kafka_AclBinding_destroy,
    })
}

/// An ACL the cluster described; None for a kind lienthong does not manage (a broker
/// resource, an unknown operation), which `acl sync` then never touches.
///
/// # Safety
/// `b` is a valid binding that lives while this runs.
unsafe fn read_binding(b: *const rd::rd_kafka_AclBinding_t) -> Option<Acl> {
    use rd::rd_kafka_AclOperation_t as O;
    use rd::rd_kafka_AclPermissionType_t as P;
    use rd::rd_kafka_ResourcePatternType_t as T;
    use rd::rd_kafka_ResourceType_t as R;
    // SAFETY: the caller's promise; the strings live as long as the binding.
    unsafe {
        let resource = match rd::rd_kafka_AclBinding_restype(b) {
            R::RD_KAFKA_RESOURCE_TOPIC => Resource::Topic,
            R::RD_KAFKA_RESOURCE_GROUP => Resource::Group,
            R::RD_KAFKA_RESOURCE_TRANSACTIONAL_ID => Resource::TransactionalId,
            R::RD_KAFKA_RESOURCE_BROKER => Resource::Cluster,
            _ => return None,
        };
        let pattern = match rd::rd_kafka_AclBinding_resource_pattern_type(b) {
            T::RD_KAFKA_RESOURCE_PATTERN_LITERAL => Pattern::Literal,
            T::RD_KAFKA_RESOURCE_PATTERN_PREFIXED => Pattern::Prefixed,
            _ => return None,
        };
        let operation = match rd::rd_kafka_AclBinding_operation(b) {
            O::RD_KAFKA_ACL_OPERATION_ALL => Operation::All,
            O::RD_KAFKA_ACL_OPERATION_READ => Operation::Read,
            O::RD_KAFKA_ACL_OPERATION_WRITE => Operation::Write,
            O::RD_KAFKA_ACL_OPERATION_CREATE => Operation::Create,
            O::RD_KAFKA_ACL_OPERATION_DELETE => Operation::Delete,
            O::RD_KAFKA_ACL_OPERATION_ALTER => Operation::Alter,
            O::RD_KAFKA_ACL_OPERATION_DESCRIBE => Operation::Describe,
            O::RD_KAFKA_ACL_OPERATION_CLUSTER_ACTION => Operation::ClusterAction,
            O::RD_KAFKA_ACL_OPERATION_DESCRIBE_CONFIGS => Operation::DescribeConfigs,
            O::RD_KAFKA_ACL_OPERATION_ALTER_CONFIGS => Operation::AlterConfigs,
            O::RD_KAFKA_ACL_OPERATION_IDEMPOTENT_WRITE => Operation::IdempotentWrite,
            _ => return None,
        };
        let permission = match rd::rd_kafka_AclBinding_permission_type(b) {
            P::RD_KAFKA_ACL_PERMISSION_TYPE_ALLOW => Permission::Allow,
            P::RD_KAFKA_ACL_PERMISSION_TYPE_DENY => Permission::Deny,
            _ => return None,
        };
        Some(Acl {
            resource,
            name: text(rd::rd_kafka_AclBinding_name(b)),
            pattern,
            principal: text(rd::rd_kafka_AclBinding_principal(b)),
            host: text(rd::rd_kafka_AclBinding_host(b)),
            operation,
            permission,
        })
    }
}

fn resource_type(r: Resource) -> rd::rd_kafka_ResourceType_t {
    use rd::rd_kafka_ResourceType_t as R;
    match r {
        Resource::Topic => R::RD_KAFKA_RESOURCE_TOPIC,
        Resource::Group => R::RD_KAFKA_RESOURCE_GROUP,
        Resource::TransactionalId => R::RD_KAFKA_RESOURCE_TRANSACTIONAL_ID,
        Resource::Cluster => R::RD_KAFKA_RESOURCE_BROKER,
    }
}

fn pattern_type(p: Pattern) -> rd::rd_kafka_ResourcePatternType_t {
    use rd::rd_kafka_ResourcePatternType_t as T;
    match p {
        Pattern::Literal => T::RD_KAFKA_RESOURCE_PATTERN_LITERAL,
        Pattern::Prefixed => T::RD_KAFKA_RESOURCE_PATTERN_PREFIXED,
    }
}

fn operation(o: Operation) -> rd::rd_kafka_AclOperation_t {
    use rd::rd_kafka_AclOperation_t as O;
    match o {
        Operation::All => O::RD_KAFKA_ACL_OPERATION_ALL,
        Operation::Read => O::RD_KAFKA_ACL_OPERATION_READ,
        Operation::Write => O::RD_KAFKA_ACL_OPERATION_WRITE,
        Operation::Create => O::RD_KAFKA_ACL_OPERATION_CREATE,
        Operation::Delete => O::RD_KAFKA_ACL_OPERATION_DELETE,
        Operation::Alter => O::RD_KAFKA_ACL_OPERATION_ALTER,
        Operation::Describe => O::RD_KAFKA_ACL_OPERATION_DESCRIBE,
        Operation::ClusterAction => O::RD_KAFKA_ACL_OPERATION_CLUSTER_ACTION,
        Operation::DescribeConfigs => O::RD_KAFKA_ACL_OPERATION_DESCRIBE_CONFIGS,
        Operation::AlterConfigs => O::RD_KAFKA_ACL_OPERATION_ALTER_CONFIGS,
        Operation::IdempotentWrite => O::RD_KAFKA_ACL_OPERATION_IDEMPOTENT_WRITE,
    }
}

fn permission(p: Permission) -> rd::rd_kafka_AclPermissionType_t {
    use rd::rd_kafka_AclPermissionType_t as P;
    match p {
        Permission::Allow => P::RD_KAFKA_ACL_PERMISSION_TYPE_ALLOW,
        Permission::Deny => P::RD_KAFKA_ACL_PERMISSION_TYPE_DENY,
    }
}
