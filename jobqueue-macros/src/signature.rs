//! What a job fn's signature says: the payload (its first argument),
//! whether it takes a `JobContext`, and its output (the return type); and,
//! for a signature with errors, which of those types can still be named.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, GenericParam, Generics, ItemFn, ReturnType, Type};

/// What the signature says the job takes and returns.
pub(crate) struct Signature<'a> {
    pub(crate) payload: &'a Type,
    pub(crate) takes_context: bool,
    pub(crate) output: Output,
}

/// The fn's return type, as the job's output.
pub(crate) struct Output {
    pub(crate) ty: TokenStream,
    pub(crate) span: Span,
    /// True for a `Result`-like return type (its name ends in `Result`, as
    /// `Result`, `anyhow::Result` or a `JobResult` alias do): an `Err` fails
    /// the run. Any other type is the output of a run that always succeeds.
    pub(crate) result_like: bool,
}

impl Output {
    pub(crate) fn of(sig: &syn::Signature) -> Self {
        match &sig.output {
            ReturnType::Default => Self {
                ty: quote!(()),
                span: sig.ident.span(),
                result_like: false,
            },
            ReturnType::Type(_, ty) => Self {
                ty: ty.to_token_stream(),
                span: ty.span(),
                result_like: last_segment_ends_with(ty, "Result"),
            },
        }
    }

    /// `Job::Output`: what a successful run stores.
    pub(crate) fn job_output(&self, private: &TokenStream) -> TokenStream {
        let ty = &self.ty;
        if self.result_like {
            quote_spanned! {self.span=>
                <#ty as #private::IntoJobResult>::Output
            }
        } else {
            quote_spanned! {self.span=> #ty }
        }
    }
}

pub(crate) fn check_signature(func: &ItemFn) -> syn::Result<Signature<'_>> {
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
    if let Type::Reference(reference) = payload {
        return Err(syn::Error::new_spanned(
            reference,
            "a job's payload is decoded from the job hash and owned by the run: take it by value (`String`, not `&str`)",
        ));
    }
    if let Some(span) = impl_trait_in(payload.to_token_stream()) {
        return Err(syn::Error::new(
            span,
            "a job's payload must be a named type: the runner decodes it from JSON, and an `impl Trait` names no type to decode into",
        ));
    }
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
    let output = Output::of(sig);
    if let Some(span) = impl_trait_in(output.ty.clone()) {
        return Err(syn::Error::new(
            span,
            "a job's output must be a named type: it is stored as JSON and read back by `wait`, and an `impl Trait` names no type to read it into",
        ));
    }
    Ok(Signature {
        payload,
        takes_context,
        output,
    })
}

/// The span of the first `impl` keyword in `tokens`, at any depth: an
/// `impl Trait` in argument or return position. rustc accepts both in an
/// `async fn`, but the job type has to name its payload and output, and the
/// error rustc gives for the generated code points at neither.
fn impl_trait_in(tokens: TokenStream) -> Option<Span> {
    tokens.into_iter().find_map(|tree| match tree {
        TokenTree::Ident(ident) if ident == "impl" => Some(ident.span()),
        TokenTree::Group(group) => impl_trait_in(group.stream()),
        _ => None,
    })
}

pub(crate) fn last_segment_is(ty: &Type, name: &str) -> bool {
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

/// The payload and output types of a signature with errors that code
/// outside the fn can still name: `None` for no payload argument, a
/// borrowed payload, or a type naming the fn's generic parameters or an
/// `impl Trait`.
pub(crate) fn nameable_types(sig: &syn::Signature) -> (Option<&Type>, Option<Output>) {
    let hidden = names_only_the_fn_knows(&sig.generics);
    let payload = sig
        .inputs
        .iter()
        .find_map(|arg| match arg {
            FnArg::Typed(pat) => Some(&*pat.ty),
            FnArg::Receiver(_) => None,
        })
        .filter(|ty| !matches!(ty, Type::Reference(_)) && !mentions(ty.to_token_stream(), &hidden));
    let output = Some(Output::of(sig)).filter(|output| !mentions(output.ty.clone(), &hidden));
    (payload, output)
}

/// The names a type may use that mean nothing outside the fn: its generic
/// parameters (lifetimes by their name), and `impl` (an `impl Trait`).
fn names_only_the_fn_knows(generics: &Generics) -> Vec<String> {
    let mut names: Vec<String> = generics
        .params
        .iter()
        .map(|param| match param {
            GenericParam::Type(t) => t.ident.to_string(),
            GenericParam::Lifetime(l) => l.lifetime.ident.to_string(),
            GenericParam::Const(c) => c.ident.to_string(),
        })
        .collect();
    names.push("impl".to_owned());
    names
}

/// True when an identifier in `tokens`, at any depth, is one of `names`.
fn mentions(tokens: TokenStream, names: &[String]) -> bool {
    tokens.into_iter().any(|tree| match tree {
        TokenTree::Ident(ident) => names.iter().any(|name| ident == name),
        TokenTree::Group(group) => mentions(group.stream(), names),
        TokenTree::Punct(_) | TokenTree::Literal(_) => false,
    })
}
