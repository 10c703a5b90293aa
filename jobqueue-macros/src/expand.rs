//! Code generation for `#[job]`.
//!
//! The user's function is always emitted exactly as written, so it stays
//! callable and its body's type errors point into the body. Next to it come:
//! a braced unit struct with the function's name (it lives only in the type
//! namespace, so both can coexist) implementing `Job`, and, in an anonymous
//! const, the handler that decodes the payload and the `inventory`
//! registration.
//!
//! Errors in the attribute or the signature are reported, spanned, beside
//! the untouched function and the job type built from what is still known
//! ([`fallback`]): without the type, every `enqueue::<name>` in the crate
//! would add an error of its own ("`name` is a function item, not a type")
//! to the one mistake.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{ItemFn, Path, Type};

use crate::args::{JobArgs, ParsedArgs};
use crate::duration::BackoffArg;
use crate::signature::{Signature, check_signature, nameable_types};

pub(crate) fn job(args: TokenStream, item: TokenStream) -> TokenStream {
    let func: ItemFn = match syn::parse2(item.clone()) {
        Ok(func) => func,
        Err(_) => {
            let err = syn::Error::new(
                Span::call_site(),
                "#[job] goes on an `async fn` that takes the payload and, optionally, a `JobContext`",
            )
            .into_compile_error();
            return quote!(#err #item);
        }
    };
    // `ParsedArgs` keeps its errors inside; an error here can only be
    // tokens it left unread.
    let ParsedArgs { args, error } = syn::parse2(args).unwrap_or_else(|error| ParsedArgs {
        args: JobArgs::default(),
        error: Some(error),
    });
    match (check_signature(&func), error) {
        (Ok(sig), None) => expand(&args, &func, &sig),
        (Ok(_), Some(error)) | (Err(error), None) => fallback(&args, &func, error),
        (Err(sig_error), Some(mut error)) => {
            error.combine(sig_error);
            fallback(&args, &func, error)
        }
    }
}

/// The expansion when the attribute or the signature has errors: the
/// function, the job type built from what is still known, and the errors.
///
/// The type keeps every use of the job (`enqueue::<name>`, `handle`,
/// `then`, `name::QUEUE`) from failing as well, so the errors shown are
/// the real ones. It has the settings of the arguments that are valid (the
/// others keep the runtime's defaults; `crate`, when valid, is what makes
/// its paths resolve) and the signature's payload and output types. A type
/// the signature does not give (no payload argument, a borrowed payload,
/// or one naming the fn's generic parameters or an `impl Trait` that
/// nothing outside the fn can name) is `()`: the payload of a job that takes none, and a type that
/// meets every bound `Job` puts on it, so it adds no error of its own (a
/// call that passes something else is still told the types differ). A fn
/// taking `self` gets no type: it sits in an `impl` block, where no struct
/// can go.
///
/// The handler and the registration are left out: with the errors the
/// crate does not build, so nothing would ever run them, and their own
/// checks would only add to the errors.
fn fallback(args: &JobArgs, func: &ItemFn, error: syn::Error) -> TokenStream {
    let error = error.into_compile_error();
    if func.sig.receiver().is_some() {
        return quote!(#func #error);
    }
    let (payload, output) = nameable_types(&func.sig);
    let output = match output {
        Some(output) => output.job_output(&private_path(args)),
        None => quote!(()),
    };
    let job_type = job_type(args, func, payload, &output);
    quote! {
        #func
        #job_type
        #error
    }
}

/// `::jobqueue::__private`, or under the path `crate = "..."` gave.
fn private_path(args: &JobArgs) -> TokenStream {
    let krate: Path = args
        .krate
        .clone()
        .unwrap_or_else(|| syn::parse_quote!(::jobqueue));
    quote!(#krate::__private)
}

/// The job type: a braced unit struct named like the fn, implementing `Job`
/// with the arguments' settings, `payload` (`()` when `None`, with no
/// `rate_key`, which takes the payload) and `output`.
fn job_type(
    args: &JobArgs,
    func: &ItemFn,
    payload: Option<&Type>,
    output: &TokenStream,
) -> TokenStream {
    let ident = &func.sig.ident;
    let vis = &func.vis;
    let private = private_path(args);
    let millis = |ms: u64| quote!(#private::Duration::from_millis(#ms));
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| ident.unraw().to_string());
    // A key left out refers to the runtime's default, not a copy of it.
    let queue_doc = args
        .queue
        .clone()
        .unwrap_or_else(|| jobqueue_rules::DEFAULT_QUEUE.to_owned());
    let queue = match &args.queue {
        Some(queue) => quote!(#queue),
        None => quote!(#private::DEFAULT_QUEUE),
    };
    let max_attempts = match args.max_attempts {
        Some(n) => quote!(#n),
        None => quote!(#private::DEFAULT_MAX_ATTEMPTS),
    };
    let visibility = match args.visibility_ms {
        Some(ms) => millis(ms),
        None => quote!(#private::DEFAULT_VISIBILITY),
    };
    let timeout = match args.timeout_ms {
        Some(ms) => {
            let d = millis(ms);
            quote!(::core::option::Option::Some(#d))
        }
        None => quote!(::core::option::Option::None),
    };
    let expires = args.expires_ms.map(|ms| {
        let d = millis(ms);
        quote!(const EXPIRES: ::core::option::Option<#private::Duration> = ::core::option::Option::Some(#d);)
    });
    let unique_for = args.unique_for_ms.map(|ms| {
        let d = millis(ms);
        quote!(const UNIQUE_FOR: ::core::option::Option<#private::Duration> = ::core::option::Option::Some(#d);)
    });
    let unique_mode = args.unique_mode.as_ref().map(|(mode, _)| {
        let variant = match mode.as_str() {
            "until_completed" => quote!(UntilCompleted),
            "window" => quote!(Window),
            _ => quote!(WhilePending),
        };
        quote!(const UNIQUE_MODE: #private::UniqueMode = #private::UniqueMode::#variant;)
    });
    let cron = args.cron.as_ref().map(|(cron, _)| {
        let tz = args.tz.as_ref().map_or("UTC", |(tz, _)| tz.as_str());
        let misfire = if matches!(args.misfire_skip, Some((true, _))) {
            quote!(Skip)
        } else {
            quote!(RunOnce)
        };
        quote!(
            const CRON: ::core::option::Option<&'static str> = ::core::option::Option::Some(#cron);
            const TZ: &'static str = #tz;
            const MISFIRE: #private::Misfire = #private::Misfire::#misfire;
        )
    });
    let backoff = args.backoff.map(|b| {
        let value = match b {
            BackoffArg::Exponential { base_ms, max_ms } => {
                let (base, max) = (millis(base_ms), millis(max_ms));
                quote!(#private::Backoff::exponential(#base, #max))
            }
            BackoffArg::Fixed { delay_ms } => {
                let delay = millis(delay_ms);
                quote!(#private::Backoff::fixed(#delay))
            }
            BackoffArg::None => quote!(#private::Backoff::None),
        };
        quote!(const BACKOFF: #private::Backoff = #value;)
    });
    let priority = args.priority.map(|p| quote!(const PRIORITY: i8 = #p;));
    let limits = (args.rate.is_some() || args.max_running.is_some()).then(|| {
        let some_u32 = |n: Option<u32>| match n {
            Some(n) => quote!(::core::option::Option::Some(#n)),
            None => quote!(::core::option::Option::None),
        };
        let rate = match args.rate {
            Some((count, per_ms)) => {
                let per = millis(per_ms);
                quote!(::core::option::Option::Some(#private::Rate::new(#count, #per)))
            }
            None => quote!(::core::option::Option::None),
        };
        let burst = some_u32(args.burst.map(|(n, _)| n));
        let max_running = some_u32(args.max_running);
        quote!(const LIMITS: #private::Limits = #private::Limits::declared(#rate, #burst, #max_running);)
    });
    let rate_key = payload.zip(args.rate_key.as_ref()).map(|(payload, expr)| {
        // Spanned at the expression: a closure or fn that does not take
        // `&Payload` or return something with `to_string` is reported there.
        let call = quote_spanned! {expr.span()=>
            ::std::string::ToString::to_string(&(#expr)(payload))
        };
        quote! {
            // A closure written in place is called where it is declared.
            #[allow(clippy::redundant_closure_call)]
            fn rate_key(payload: &#payload) -> ::core::option::Option<::std::string::String> {
                ::core::option::Option::Some(#call)
            }
        }
    });
    let payload = match payload {
        Some(payload) => payload.to_token_stream(),
        None => quote!(()),
    };
    let doc = format!(
        "The job defined by [`{ident}()`]: name `{name}`, queue `{queue_doc}`. Enqueue it with \
         `client.enqueue::<{ident}>(payload)`."
    );
    quote! {
        #[doc = #doc]
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy)]
        #vis struct #ident {}

        impl #private::Job for #ident {
            type Payload = #payload;
            type Output = #output;
            const NAME: &'static str = #name;
            const QUEUE: &'static str = #queue;
            const MAX_ATTEMPTS: u32 = #max_attempts;
            const VISIBILITY: #private::Duration = #visibility;
            const TIMEOUT: ::core::option::Option<#private::Duration> = #timeout;
            #backoff
            #expires
            #unique_for
            #unique_mode
            #cron
            #priority
            #limits
            #rate_key
        }
    }
}

/// The expansion of a valid job: the function, the job type, and the
/// handler with its registration.
fn expand(args: &JobArgs, func: &ItemFn, sig: &Signature<'_>) -> TokenStream {
    let ident = &func.sig.ident;
    let private = private_path(args);
    let job_type = job_type(
        args,
        func,
        Some(sig.payload),
        &sig.output.job_output(&private),
    );
    // A periodic job's ticks carry its payload type's default: the error
    // when it has none points at the cron argument.
    let with_cron = args.cron.as_ref().map(|(_, span)| {
        quote_spanned!(*span=>
            .with_cron::<#ident>(|| #private::serde_json::to_string(
                &<#ident as #private::Job>::Payload::default()
            ))
        )
    });
    let payload = sig.payload;
    let call = if sig.takes_context {
        quote!(#ident(payload, ctx))
    } else {
        quote!({
            let _ = ctx;
            #ident(payload)
        })
    };
    // Each check is spanned where the user can fix it: the payload's type,
    // the return type, and the fn's name for a future that is not `Send`.
    let decode = quote_spanned! {payload.span()=>
        __jq::decode_payload::<#payload>(payload)
    };
    let finish = if sig.output.result_like {
        quote_spanned! {sig.output.span=> __jq::finish }
    } else {
        quote_spanned! {sig.output.span=> __jq::finish_value }
    };
    let boxed = quote_spanned! {ident.span()=>
        __jq::box_handler(async move { #finish(#call.await) })
    };
    let handler = format_ident!("__jobqueue_handler_{}", ident.unraw().to_string());
    quote! {
        #func

        #job_type

        const _: () = {
            #[allow(non_snake_case)]
            fn #handler(
                payload: &str,
                ctx: #private::JobContext,
            ) -> #private::HandlerFuture {
                use #private as __jq;
                let payload: #payload = match #decode {
                    ::core::result::Result::Ok(payload) => payload,
                    ::core::result::Result::Err(error) => return __jq::fail_now(error),
                };
                #boxed
            }

            #private::inventory::submit! {
                #private::JobDefinition::new::<#ident>(::core::module_path!(), #handler) #with_cron
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand_str(attr: &str, item: &str) -> String {
        job(attr.parse().unwrap(), item.parse().unwrap()).to_string()
    }

    #[test]
    fn the_function_is_kept_as_written_with_a_type_of_the_same_name() {
        let out = expand_str(
            r#"queue = "email""#,
            "/// Sends it.\n#[inline] pub async fn send_welcome(args: Welcome, ctx: JobContext) -> Result<Receipt, E> { body() }",
        );
        assert!(out.contains("pub async fn send_welcome"), "{out}");
        assert!(out.contains("# [inline]"), "{out}");
        assert!(out.contains("pub struct send_welcome { }"), "{out}");
        assert!(
            out.contains("const NAME : & 'static str = \"send_welcome\""),
            "{out}"
        );
        assert!(
            out.contains("const QUEUE : & 'static str = \"email\""),
            "{out}"
        );
        assert!(out.contains("inventory :: submit !"), "{out}");
    }

    #[test]
    fn errors_keep_the_function_and_add_a_compile_error() {
        for (attr, item) in [
            ("", "fn not_async(a: A) {}"),
            ("bogus = 1", "async fn f(a: A) {}"),
            ("", "async fn g<T>(a: T) {}"),
            ("", "async fn none() {}"),
            ("", "async fn three(a: A, c: JobContext, x: X) {}"),
            ("", "async fn wrong_second(a: A, b: B) {}"),
        ] {
            let out = expand_str(attr, item);
            assert!(out.contains("compile_error"), "{item}: {out}");
            assert!(!out.contains("inventory"), "{item}: {out}");
            let name = item
                .split("fn ")
                .nth(1)
                .unwrap()
                .split(['(', '<'])
                .next()
                .unwrap();
            assert!(
                out.contains(&format!("fn {name}")),
                "{item}: the fn is kept: {out}"
            );
        }
    }

    #[test]
    fn an_argument_error_still_generates_the_job_type_with_the_valid_settings() {
        let out = expand_str(
            r#"queue = "billing", backoff = "100ms", crate = "::my::jq""#,
            "pub async fn charge(cents: u64) -> Result<Receipt, E> { body() }",
        );
        assert_eq!(out.matches("compile_error").count(), 1, "{out}");
        assert!(out.contains("pub async fn charge"), "{out}");
        assert!(out.contains("pub struct charge { }"), "{out}");
        assert!(
            out.contains("impl :: my :: jq :: __private :: Job for charge"),
            "{out}"
        );
        assert!(out.contains("type Payload = u64"), "{out}");
        assert!(out.contains("< Result < Receipt , E > as"), "{out}");
        assert!(out.contains("\"billing\""), "{out}");
        assert!(
            !out.contains("BACKOFF"),
            "the bad key keeps the default: {out}"
        );
        assert!(!out.contains("inventory"), "{out}");
    }

    #[test]
    fn a_signature_error_keeps_the_types_the_signature_still_gives() {
        let payload_and_output = |item: &str| {
            let out = expand_str("", item);
            assert!(out.contains("compile_error"), "{item}: {out}");
            assert!(!out.contains("inventory"), "{item}: {out}");
            let field = |name: &str| {
                let start = out.find(&format!("type {name} = ")).expect(name) + 8 + name.len();
                out[start..].split(" ;").next().unwrap().to_owned()
            };
            (field("Payload"), field("Output"))
        };
        let t = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        assert_eq!(
            payload_and_output("fn not_async(a: A) -> u8 { 1 }"),
            t("A", "u8")
        );
        assert_eq!(
            payload_and_output("async fn wrong_second(a: A, b: B) {}"),
            t("A", "()")
        );
        assert_eq!(
            payload_and_output("async fn none() -> u8 { 1 }"),
            t("()", "u8")
        );
        assert_eq!(
            payload_and_output(
                "async fn generic<T>(a: Vec<T>) -> T { a.into_iter().next().unwrap() }"
            ),
            t("()", "()")
        );
        assert_eq!(
            payload_and_output("async fn borrowed<'a>(a: A, c: &'a C) -> Option<&'a str> { None }"),
            t("A", "()")
        );
        assert_eq!(
            payload_and_output("fn future(a: A) -> impl Future<Output = u8> { async { 1 } }"),
            t("A", "()")
        );
    }

    #[test]
    fn a_method_gets_no_type_where_no_struct_can_go() {
        let out = expand_str("bogus = 1", "async fn send(&self, a: A) {}");
        assert!(out.contains("compile_error"), "{out}");
        assert!(!out.contains("struct"), "{out}");
    }

    #[test]
    fn argument_and_signature_errors_are_all_reported() {
        let out = expand_str("retries = 3, priority = 9", "fn not_async(a: A) {}");
        assert_eq!(out.matches("compile_error").count(), 3, "{out}");
    }

    #[test]
    fn plain_return_values_are_outputs_and_result_aliases_are_results() {
        let out = expand_str("", "async fn count(a: A) -> u64 { 1 }");
        assert!(out.contains("type Output = u64"), "{out}");
        assert!(out.contains("finish_value"), "{out}");
        let out = expand_str("", "async fn alias(a: A) -> JobResult<u64> { Ok(1) }");
        assert!(out.contains("IntoJobResult"), "{out}");
        assert!(!out.contains("finish_value"), "{out}");
    }

    #[test]
    fn keys_left_out_refer_to_the_runtime_defaults() {
        let out = expand_str("", "async fn d(a: A) {}");
        assert!(out.contains("__private :: DEFAULT_QUEUE"), "{out}");
        assert!(out.contains("__private :: DEFAULT_MAX_ATTEMPTS"), "{out}");
        assert!(out.contains("__private :: DEFAULT_VISIBILITY"), "{out}");
    }

    #[test]
    fn the_stored_name_defaults_to_the_fn_name_and_can_be_set() {
        let out = expand_str(r#"name = "welcome.v1""#, "async fn r#type(a: A) {}");
        assert!(out.contains("\"welcome.v1\""), "{out}");
        let out = expand_str("", "async fn r#type(a: A) {}");
        assert!(
            out.contains("const NAME : & 'static str = \"type\""),
            "{out}"
        );
    }
}
