//! Code generation for `#[job]`.
//!
//! The user's function is always emitted exactly as written, so it stays
//! callable and its body's type errors point into the body. Next to it come:
//! a braced unit struct with the function's name (it lives only in the type
//! namespace, so both can coexist) implementing `Job`, and, in an anonymous
//! const, the handler that decodes the payload and the `inventory`
//! registration. Any error in the attribute or the signature is reported,
//! spanned, beside the untouched function.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, Path, ReturnType, Type};

use crate::args::{BackoffArg, JobArgs};

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
    let expanded = syn::parse2::<JobArgs>(args).and_then(|args| expand(args, &func));
    match expanded {
        Ok(tokens) => tokens,
        Err(err) => {
            let err = err.into_compile_error();
            quote!(#func #err)
        }
    }
}

/// What the signature says the job takes and returns.
struct Signature<'a> {
    payload: &'a Type,
    takes_context: bool,
    output: TokenStream,
    output_span: Span,
    /// True for a `Result`-like return type (its name ends in `Result`, as
    /// `Result`, `anyhow::Result` or a `JobResult` alias do): an `Err` fails
    /// the run. Any other type is the output of a run that always succeeds.
    result_like: bool,
}

fn check_signature(func: &ItemFn) -> syn::Result<Signature<'_>> {
    let sig = &func.sig;
    if sig.asyncness.is_none() {
        return Err(syn::Error::new(
            sig.fn_token.span(),
            "the `async` keyword is missing: a job is an `async fn`",
        ));
    }
    if let Some(receiver) = sig.receiver() {
        return Err(syn::Error::new(
            receiver.span(),
            "a job cannot take `self`: write it as a free `async fn`",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new(
            sig.generics.span(),
            "a job cannot be generic: its payload type must be known to decode it",
        ));
    }
    if let Some(variadic) = &sig.variadic {
        return Err(syn::Error::new(variadic.span(), "a job cannot be variadic"));
    }
    let mut typed = sig.inputs.iter().filter_map(|arg| match arg {
        FnArg::Typed(pat) => Some(pat),
        FnArg::Receiver(_) => None,
    });
    let payload = match typed.next() {
        Some(arg) => &*arg.ty,
        None => {
            return Err(syn::Error::new(
                sig.paren_token.span.join(),
                "a job takes its payload as the first argument, e.g. `args: Welcome`, and optionally a `JobContext` second",
            ));
        }
    };
    let takes_context = match typed.next() {
        None => false,
        Some(arg) if last_segment_is(&arg.ty, "JobContext") => true,
        Some(arg) => {
            return Err(syn::Error::new(
                arg.ty.span(),
                "the second argument of a job must be a `JobContext`",
            ));
        }
    };
    if let Some(extra) = typed.next() {
        return Err(syn::Error::new(
            extra.span(),
            "a job takes at most two arguments: the payload and a `JobContext`",
        ));
    }
    let (output, output_span, result_like) = match &sig.output {
        ReturnType::Default => (quote!(()), sig.ident.span(), false),
        ReturnType::Type(_, ty) => (quote!(#ty), ty.span(), last_segment_ends_with(ty, "Result")),
    };
    Ok(Signature {
        payload,
        takes_context,
        output,
        output_span,
        result_like,
    })
}

fn last_segment_is(ty: &Type, name: &str) -> bool {
    match ty {
        Type::Path(p) => p.path.segments.last().is_some_and(|s| s.ident == name),
        _ => false,
    }
}

fn last_segment_ends_with(ty: &Type, suffix: &str) -> bool {
    match ty {
        Type::Path(p) => p
            .path
            .segments
            .last()
            .is_some_and(|s| s.ident.to_string().ends_with(suffix)),
        _ => false,
    }
}

fn expand(args: JobArgs, func: &ItemFn) -> syn::Result<TokenStream> {
    let sig = check_signature(func)?;
    let krate: Path = args.krate.unwrap_or_else(|| syn::parse_quote!(::jobqueue));
    let ident = &func.sig.ident;
    let vis = &func.vis;
    let private = quote!(#krate::__private);
    let millis = |ms: u64| quote!(#private::Duration::from_millis(#ms));
    let name = args.name.unwrap_or_else(|| ident.unraw().to_string());
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
    // A periodic job's ticks carry its payload type's default: the error
    // when it has none points at the cron argument.
    let with_cron = args.cron.as_ref().map(|(_, span)| {
        quote::quote_spanned!(*span=>
            .with_cron::<#ident>(|| #private::serde_json::to_string(
                &<#ident as #private::Job>::Payload::default()
            ))
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
    let payload = sig.payload;
    let rate_key = args.rate_key.as_ref().map(|expr| {
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
    let output = &sig.output;
    let output_type = if sig.result_like {
        quote_spanned! {sig.output_span=>
            <#output as #private::IntoJobResult>::Output
        }
    } else {
        quote_spanned! {sig.output_span=> #output }
    };
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
    let finish = if sig.result_like {
        quote_spanned! {sig.output_span=> __jq::finish }
    } else {
        quote_spanned! {sig.output_span=> __jq::finish_value }
    };
    let boxed = quote_spanned! {ident.span()=>
        __jq::box_handler(async move { #finish(#call.await) })
    };
    let handler = format_ident!("__jobqueue_handler_{}", ident.unraw().to_string());
    let doc = format!(
        "The job defined by [`{ident}()`]: name `{name}`, queue `{queue_doc}`. Enqueue it with \
         `client.enqueue::<{ident}>(payload)`."
    );
    Ok(quote! {
        #func

        #[doc = #doc]
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy)]
        #vis struct #ident {}

        impl #private::Job for #ident {
            type Payload = #payload;
            type Output = #output_type;
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
    })
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
