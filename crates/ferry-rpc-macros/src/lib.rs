//! `#[ferry_rpc::service]`: turns a trait (the schema) into a service's server traits,
//! dispatchers, typed clients and push helpers. See the `ferry-rpc` crate for what it
//! generates; this crate only parses and prints.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as Tokens};
use quote::{format_ident, quote};
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{
    Attribute, FnArg, GenericArgument, Ident, ItemTrait, LitInt, Pat, PathArguments, ReturnType,
    Token, TraitItem, Type, TypeParamBound,
};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Codec {
    Postcard,
    Json,
    Rkyv,
}

impl Codec {
    fn parse(ident: &Ident) -> syn::Result<Codec> {
        match ident.to_string().as_str() {
            "postcard" => Ok(Codec::Postcard),
            "json" => Ok(Codec::Json),
            "rkyv" => Ok(Codec::Rkyv),
            other => Err(syn::Error::new(
                ident.span(),
                format!("unknown codec `{other}`: use postcard, rkyv or json"),
            )),
        }
    }
    fn id(self) -> Tokens {
        match self {
            Codec::Postcard => quote!(::ferry_rpc::CodecId::Postcard),
            Codec::Json => quote!(::ferry_rpc::CodecId::Json),
            Codec::Rkyv => quote!(::ferry_rpc::CodecId::Rkyv),
        }
    }
    /// An expression of type `ValueEncoder<ty>`.
    fn encoder(self, ty: &Type) -> Tokens {
        match self {
            Codec::Postcard => {
                quote!(|v: &#ty, b: &mut ::std::vec::Vec<u8>| ::ferry_rpc::codec::postcard_encode(v, b))
            }
            Codec::Json => {
                quote!(|v: &#ty, b: &mut ::std::vec::Vec<u8>| ::ferry_rpc::codec::json_encode(v, b))
            }
            Codec::Rkyv => {
                quote!(|v: &#ty, b: &mut ::std::vec::Vec<u8>| ::ferry_rpc::codec::rkyv_encode::<#ty>(v, b))
            }
        }
    }
    /// An expression of type `fn(&[u8]) -> Result<ty, CodecError>` (owned values).
    fn owned_decoder(self, ty: &Type) -> Tokens {
        match self {
            Codec::Postcard => quote!(|b: &[u8]| ::ferry_rpc::codec::postcard_decode::<#ty>(b)),
            Codec::Json => quote!(|b: &[u8]| ::ferry_rpc::codec::json_decode::<#ty>(b)),
            Codec::Rkyv => quote!(|b: &[u8]| ::ferry_rpc::codec::rkyv_decode_owned::<#ty>(b)),
        }
    }
}

struct ServiceArgs {
    codec: Codec,
}

impl Parse for ServiceArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut codec = Codec::Postcard;
        while !input.is_empty() {
            let key: Ident = input.parse()?;
            input.parse::<Token![=]>()?;
            if key == "codec" {
                codec = Codec::parse(&input.parse()?)?;
            } else {
                return Err(syn::Error::new(
                    key.span(),
                    "unknown argument: `#[service(codec = postcard|rkyv|json)]`",
                ));
            }
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        Ok(ServiceArgs { codec })
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Call,
    Stream,
    Notification,
    Push,
}

struct MethodDef {
    name: Ident,
    docs: Vec<Attribute>,
    kind: Kind,
    codec: Codec,
    explicit_id: Option<u32>,
    arg_name: Ident,
    arg_ty: Type,
    raw: bool,
    /// Call: the answer; Stream: the item.
    out_ty: Option<Type>,
}

/// Whether `ty` is `&[u8]`.
fn is_byte_slice(ty: &Type) -> bool {
    if let Type::Reference(r) = ty
        && r.mutability.is_none()
        && let Type::Slice(s) = &*r.elem
        && let Type::Path(p) = &*s.elem
    {
        return p.path.is_ident("u8");
    }
    false
}

/// `impl Stream<Item = T>` → `T`.
fn stream_item(ty: &Type) -> Option<Type> {
    let Type::ImplTrait(it) = ty else { return None };
    for b in &it.bounds {
        if let TypeParamBound::Trait(t) = b
            && let Some(seg) = t.path.segments.last()
            && seg.ident == "Stream"
            && let PathArguments::AngleBracketed(args) = &seg.arguments
        {
            for a in &args.args {
                if let GenericArgument::AssocType(at) = a
                    && at.ident == "Item"
                {
                    return Some(at.ty.clone());
                }
            }
        }
    }
    None
}

fn parse_method(f: &syn::TraitItemFn, default_codec: Codec) -> syn::Result<MethodDef> {
    let mut kind = None;
    let mut codec = default_codec;
    let mut explicit_id = None;
    let mut docs = Vec::new();
    for attr in &f.attrs {
        let path = attr.path();
        if path.is_ident("notification") {
            kind = Some(Kind::Notification);
        } else if path.is_ident("push") {
            kind = Some(Kind::Push);
        } else if path.is_ident("codec") {
            let ident: Ident = attr.parse_args()?;
            codec = Codec::parse(&ident)?;
        } else if path.is_ident("method") {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("id") {
                    let lit: LitInt = meta.value()?.parse()?;
                    explicit_id = Some(lit.base10_parse::<u32>()?);
                    Ok(())
                } else {
                    Err(meta.error("expected `#[method(id = N)]`"))
                }
            })?;
        } else {
            docs.push(attr.clone());
        }
    }
    if f.default.is_some() {
        return Err(syn::Error::new(
            f.span(),
            "a service method is a declaration: no body",
        ));
    }
    let inputs: Vec<&FnArg> = f.sig.inputs.iter().collect();
    let [FnArg::Typed(arg)] = inputs.as_slice() else {
        return Err(syn::Error::new(
            f.sig.inputs.span(),
            "a service method takes exactly one argument (`fn m(req: Request)`), no `self`; \
             use a struct or a tuple for several values",
        ));
    };
    let Pat::Ident(pat) = &*arg.pat else {
        return Err(syn::Error::new(arg.pat.span(), "name the argument"));
    };
    let arg_ty = (*arg.ty).clone();
    let raw = is_byte_slice(&arg_ty);
    let (kind, out_ty) = match (&f.sig.output, kind) {
        (ReturnType::Default, Some(k)) => (k, None),
        (ReturnType::Type(..), Some(_)) => {
            return Err(syn::Error::new(
                f.sig.output.span(),
                "notifications and pushes have no answer: remove the return type",
            ));
        }
        (ReturnType::Default, None) => {
            return Err(syn::Error::new(
                f.sig.ident.span(),
                "a call needs a return type (or mark it #[notification] / #[push])",
            ));
        }
        (ReturnType::Type(_, ty), None) => match stream_item(ty) {
            Some(item) => (Kind::Stream, Some(item)),
            None => (Kind::Call, Some((**ty).clone())),
        },
    };
    if raw && !matches!(kind, Kind::Call | Kind::Stream) {
        return Err(syn::Error::new(
            arg.ty.span(),
            "raw `&[u8]` arguments are for calls and streams",
        ));
    }
    Ok(MethodDef {
        name: f.sig.ident.clone(),
        docs,
        kind,
        codec,
        explicit_id,
        arg_name: pat.ident.clone(),
        arg_ty,
        raw,
        out_ty,
    })
}

/// The id const and the `Method` static of `m`.
fn idents(m: &MethodDef) -> (Ident, Ident) {
    let up = m.name.to_string().to_uppercase();
    (format_ident!("ID_{}", up), format_ident!("M_{}", up))
}

/// An expression of type `Result<R, CodecError>`: decodes `body` as `m`'s argument and
/// evaluates `cont` with it bound to `__arg` (with `awaiting`, `cont` may `.await`).
fn decode_then(m: &MethodDef, body: Tokens, cont: Tokens, awaiting: bool) -> Tokens {
    let ty = &m.arg_ty;
    if m.raw {
        return quote!({ let __arg: &[u8] = #body; ::std::result::Result::Ok(#cont) });
    }
    match m.codec {
        Codec::Postcard => quote!(match ::ferry_rpc::codec::postcard_decode::<#ty>(#body) {
            ::std::result::Result::Ok(__arg) => ::std::result::Result::Ok(#cont),
            ::std::result::Result::Err(e) => ::std::result::Result::Err(e),
        }),
        Codec::Json => quote!(match ::ferry_rpc::codec::json_decode::<#ty>(#body) {
            ::std::result::Result::Ok(__arg) => ::std::result::Result::Ok(#cont),
            ::std::result::Result::Err(e) => ::std::result::Result::Err(e),
        }),
        Codec::Rkyv if !awaiting => {
            quote!(::ferry_rpc::codec::rkyv_view::<#ty, _>(#body, |__arg| #cont))
        }
        Codec::Rkyv => quote!({
            let __aligned = ::ferry_rpc::codec::AlignedBody::new(#body);
            match ::ferry_rpc::codec::rkyv_access::<#ty>(__aligned.bytes()) {
                ::std::result::Result::Ok(__arg) => ::std::result::Result::Ok(#cont),
                ::std::result::Result::Err(e) => ::std::result::Result::Err(e),
            }
        }),
    }
}

/// The type a handler receives for `m`'s argument.
fn handler_arg_ty(m: &MethodDef) -> Tokens {
    let ty = &m.arg_ty;
    if m.raw {
        quote!(&[u8])
    } else if m.codec == Codec::Rkyv {
        quote!(&::ferry_rpc::codec::Archived<#ty>)
    } else {
        quote!(#ty)
    }
}

/// The argument type a client method takes for `m`.
fn client_arg_ty(m: &MethodDef) -> Tokens {
    let ty = &m.arg_ty;
    if m.raw { quote!(&[u8]) } else { quote!(&#ty) }
}

/// An expression of type `&mut dyn FnMut(&mut Vec<u8>) -> Result<(), CodecError>` encoding the
/// argument variable `name` of `m`.
fn arg_encoder(m: &MethodDef, name: &Ident) -> Tokens {
    let ty = &m.arg_ty;
    let f = m.codec.encoder(ty);
    quote!(&mut |b: &mut ::std::vec::Vec<u8>| (#f)(#name, b))
}

fn expand(args: ServiceArgs, item: ItemTrait) -> syn::Result<Tokens> {
    if !item.generics.params.is_empty() {
        return Err(syn::Error::new(
            item.generics.span(),
            "a service trait has no generic parameters",
        ));
    }
    let vis = &item.vis;
    let name = &item.ident;
    let service_str = name.to_string();
    let trait_docs: Vec<&Attribute> = item.attrs.iter().collect();
    let mut methods = Vec::new();
    for ti in &item.items {
        match ti {
            TraitItem::Fn(f) => methods.push(parse_method(f, args.codec)?),
            other => {
                return Err(syn::Error::new(
                    other.span(),
                    "a service trait holds methods only",
                ));
            }
        }
    }

    // The blocking client has `start_foo` for every call `foo`: no other client method may
    // have that name.
    for m in methods.iter().filter(|m| m.kind == Kind::Call) {
        let start = format!("start_{}", m.name);
        if let Some(clash) = methods
            .iter()
            .find(|o| o.kind != Kind::Push && o.name == start)
        {
            return Err(syn::Error::new(
                clash.name.span(),
                format!(
                    "`{start}` is the name of the generated method that starts a call of `{}` \
                     (pipelining): rename one of the two",
                    m.name
                ),
            ));
        }
    }

    let server_name = format_ident!("{}Server", name);
    let async_trait = format_ident!("Async{}", name);
    let async_server = format_ident!("Async{}Server", name);
    let client_name = format_ident!("{}Client", name);
    let async_client = format_ident!("{}AsyncClient", name);
    let pusher = format_ident!("{}Pusher", name);
    let pushes = format_ident!("{}Pushes", name);
    let module = format_ident!("__ferry_rpc_{}", name);

    // The method table.
    let mut consts = Vec::new();
    let mut id_list = Vec::new();
    for m in &methods {
        let (id, st) = idents(m);
        let mname = m.name.to_string();
        let qualified = format!("{service_str}.{mname}");
        let idv = match m.explicit_id {
            Some(n) => quote!(#n),
            None => quote!(::ferry_rpc::method_id(#service_str, #mname)),
        };
        let codec = m.codec.id();
        let kind = match m.kind {
            Kind::Call => quote!(::ferry_rpc::MethodKind::Call),
            Kind::Stream => quote!(::ferry_rpc::MethodKind::Stream),
            Kind::Notification => quote!(::ferry_rpc::MethodKind::Notification),
            Kind::Push => quote!(::ferry_rpc::MethodKind::Push),
        };
        let raw = m.raw;
        let arg_ty = &m.arg_ty;
        let req_str = quote!(#arg_ty).to_string();
        consts.push(quote! {
            pub const #id: u32 = #idv;
            pub static #st: ::ferry_rpc::Method = ::ferry_rpc::Method {
                service: SERVICE,
                name: #mname,
                qualified: #qualified,
                id: #id,
                codec: #codec,
                kind: #kind,
                raw_request: #raw,
                request_type: #req_str,
            };
        });
        id_list.push(quote!(#id));
    }

    // Server traits.
    let mut sync_fns = Vec::new();
    let mut async_fns = Vec::new();
    for m in methods.iter().filter(|m| m.kind != Kind::Push) {
        let docs = &m.docs;
        let fname = &m.name;
        let an = &m.arg_name;
        let at = handler_arg_ty(m);
        match m.kind {
            Kind::Call => {
                let out = m.out_ty.as_ref();
                sync_fns.push(quote! {
                    #(#docs)*
                    fn #fname(&self, cx: &::ferry_rpc::Context<'_>, #an: #at)
                        -> ::std::result::Result<#out, ::ferry_rpc::Status>;
                });
                async_fns.push(quote! {
                    #(#docs)*
                    fn #fname(&self, cx: &::ferry_rpc::Context<'_>, #an: #at)
                        -> impl ::std::future::Future<Output = ::std::result::Result<#out, ::ferry_rpc::Status>> + ::std::marker::Send;
                });
            }
            Kind::Stream => {
                let item = m.out_ty.as_ref();
                sync_fns.push(quote! {
                    #(#docs)*
                    fn #fname(&self, cx: &::ferry_rpc::Context<'_>, #an: #at, items: &::ferry_rpc::Sink<'_, #item>)
                        -> ::std::result::Result<(), ::ferry_rpc::Status>;
                });
                async_fns.push(quote! {
                    #(#docs)*
                    fn #fname(&self, cx: &::ferry_rpc::Context<'_>, #an: #at, items: &::ferry_rpc::AsyncSink<#item>)
                        -> impl ::std::future::Future<Output = ::std::result::Result<(), ::ferry_rpc::Status>> + ::std::marker::Send;
                });
            }
            Kind::Notification => {
                sync_fns.push(quote! {
                    #(#docs)*
                    fn #fname(&self, cx: &::ferry_rpc::Context<'_>, #an: #at);
                });
                async_fns.push(quote! {
                    #(#docs)*
                    fn #fname(&self, cx: &::ferry_rpc::Context<'_>, #an: #at)
                        -> impl ::std::future::Future<Output = ()> + ::std::marker::Send;
                });
            }
            Kind::Push => unreachable!(),
        }
    }

    // Blocking dispatch.
    let mut sync_call_arms = Vec::new();
    let mut sync_note_arms = Vec::new();
    let mut async_call_arms = Vec::new();
    let mut async_note_arms = Vec::new();
    for m in &methods {
        let (id, st) = idents(m);
        let fname = &m.name;
        match m.kind {
            Kind::Call => {
                let out = m.out_ty.as_ref().expect("calls have an answer");
                let enc = m.codec.encoder(out);
                let d = decode_then(
                    m,
                    quote!(call.body()),
                    quote!(h.#fname(&call.context(), __arg)),
                    false,
                );
                sync_call_arms.push(quote! {
                    #module::#id => {
                        let ::std::option::Option::Some(call) = call.check(&#module::#st) else { return };
                        let r = #d;
                        match r {
                            ::std::result::Result::Ok(out) => call.respond(out, #enc),
                            ::std::result::Result::Err(e) => call.bad_request(e),
                        }
                    }
                });
                let d = decode_then(
                    m,
                    quote!(call.body()),
                    quote!(h.#fname(&call.context(), __arg).await),
                    true,
                );
                async_call_arms.push(quote! {
                    #module::#id => {
                        let ::std::option::Option::Some(call) = call.check(&#module::#st).await else { return };
                        let r = #d;
                        match r {
                            ::std::result::Result::Ok(out) => call.respond(out, #enc).await,
                            ::std::result::Result::Err(e) => call.bad_request(e).await,
                        }
                    }
                });
            }
            Kind::Stream => {
                let item = m.out_ty.as_ref().expect("streams have items");
                let enc = m.codec.encoder(item);
                let d = decode_then(m, quote!(body), quote!(h.#fname(cx, __arg, sink)), false);
                sync_call_arms.push(quote! {
                    #module::#id => {
                        let ::std::option::Option::Some(call) = call.check(&#module::#st) else { return };
                        let h = self.0.clone();
                        call.stream::<#item>(#enc, move |cx, body, sink| {
                            let h = &*h;
                            let r = #d;
                            match r {
                                ::std::result::Result::Ok(r) => r.map_err(::ferry_rpc::Failure::from),
                                ::std::result::Result::Err(e) => ::std::result::Result::Err(::ferry_rpc::Failure::BadRequest(e)),
                            }
                        });
                    }
                });
                let d = decode_then(
                    m,
                    quote!(&body),
                    quote!(h.#fname(&sink.context(), __arg, &sink).await),
                    true,
                );
                async_call_arms.push(quote! {
                    #module::#id => {
                        let ::std::option::Option::Some(call) = call.check(&#module::#st).await else { return };
                        let (body, sink) = call.into_stream::<#item>(#enc);
                        let r = #d;
                        let r = match r {
                            ::std::result::Result::Ok(r) => r.map_err(::ferry_rpc::Failure::from),
                            ::std::result::Result::Err(e) => ::std::result::Result::Err(::ferry_rpc::Failure::BadRequest(e)),
                        };
                        sink.end(r).await;
                    }
                });
            }
            Kind::Notification => {
                let d = decode_then(
                    m,
                    quote!(note.body()),
                    quote!(h.#fname(&note.context(&#module::#st), __arg)),
                    false,
                );
                sync_note_arms.push(quote! {
                    #module::#id => {
                        if !note.check(&#module::#st) { return }
                        let r = #d;
                        if let ::std::result::Result::Err(e) = r {
                            note.bad_request(&#module::#st, e);
                        }
                    }
                });
                let d = decode_then(
                    m,
                    quote!(note.body()),
                    quote!(h.#fname(&note.context(&#module::#st), __arg).await),
                    true,
                );
                async_note_arms.push(quote! {
                    #module::#id => {
                        if !note.check(&#module::#st) { return }
                        let r = #d;
                        if let ::std::result::Result::Err(e) = r {
                            note.bad_request(&#module::#st, e);
                        }
                    }
                });
            }
            Kind::Push => {}
        }
    }

    // Clients.
    let mut client_fns = Vec::new();
    let mut async_client_fns = Vec::new();
    for m in &methods {
        let (_, st) = idents(m);
        let fname = &m.name;
        let an = &m.arg_name;
        let at = client_arg_ty(m);
        let docs = &m.docs;
        match m.kind {
            Kind::Call => {
                let out = m.out_ty.as_ref().expect("calls have an answer");
                let dec = m.codec.owned_decoder(out);
                let start = format_ident!("start_{}", fname);
                let start_doc = format!(
                    " Starts a call of [`{fname}`](Self::{fname}) and returns at once: collect \
                     its answer with [`PendingReply::wait`](ferry_rpc::PendingReply::wait). \
                     Many calls can be in flight from one thread this way (pipelining); the \
                     client's timeout, if any, counts from now. Dropping the pending reply \
                     without waiting cancels the call on the server."
                );
                let start_enc = if m.raw {
                    // The request is staged in the per-thread buffer (not written in place).
                    quote!(&mut |b: &mut ::std::vec::Vec<u8>| { b.extend_from_slice(#an); ::std::result::Result::Ok(()) })
                } else {
                    arg_encoder(m, an)
                };
                client_fns.push(quote! {
                    #[doc = #start_doc]
                    pub fn #start(&self, #an: #at) -> ::std::result::Result<::ferry_rpc::PendingReply<#out>, ::ferry_rpc::RpcError> {
                        self.client.start_call(&#module::#st, self.timeout, #start_enc, #dec)
                    }
                });
                if m.raw {
                    client_fns.push(quote! {
                        #(#docs)*
                        pub fn #fname(&self, #an: #at) -> ::std::result::Result<#out, ::ferry_rpc::RpcError> {
                            self.client.call_raw(&#module::#st, self.timeout, #an, #dec)
                        }
                    });
                    async_client_fns.push(quote! {
                        #(#docs)*
                        pub async fn #fname(&self, #an: #at) -> ::std::result::Result<#out, ::ferry_rpc::RpcError> {
                            self.client.call(&#module::#st, self.timeout, &mut |b: &mut ::std::vec::Vec<u8>| { b.extend_from_slice(#an); ::std::result::Result::Ok(()) }, #dec).await
                        }
                    });
                } else {
                    let enc = arg_encoder(m, an);
                    client_fns.push(quote! {
                        #(#docs)*
                        pub fn #fname(&self, #an: #at) -> ::std::result::Result<#out, ::ferry_rpc::RpcError> {
                            self.client.call(&#module::#st, self.timeout, #enc, #dec)
                        }
                    });
                    async_client_fns.push(quote! {
                        #(#docs)*
                        pub async fn #fname(&self, #an: #at) -> ::std::result::Result<#out, ::ferry_rpc::RpcError> {
                            self.client.call(&#module::#st, self.timeout, #enc, #dec).await
                        }
                    });
                }
            }
            Kind::Stream => {
                let item = m.out_ty.as_ref().expect("streams have items");
                let dec = m.codec.owned_decoder(item);
                let enc = if m.raw {
                    quote!(&mut |b: &mut ::std::vec::Vec<u8>| { b.extend_from_slice(#an); ::std::result::Result::Ok(()) })
                } else {
                    arg_encoder(m, an)
                };
                client_fns.push(quote! {
                    #(#docs)*
                    pub fn #fname(&self, #an: #at) -> ::std::result::Result<::ferry_rpc::TypedStream<#item>, ::ferry_rpc::RpcError> {
                        self.client.stream(&#module::#st, self.timeout, #enc, #dec)
                    }
                });
                async_client_fns.push(quote! {
                    #(#docs)*
                    pub async fn #fname(&self, #an: #at) -> ::std::result::Result<::ferry_rpc::AsyncTypedStream<#item>, ::ferry_rpc::RpcError> {
                        self.client.stream(&#module::#st, self.timeout, #enc, #dec).await
                    }
                });
            }
            Kind::Notification => {
                let enc = arg_encoder(m, an);
                client_fns.push(quote! {
                    #(#docs)*
                    pub fn #fname(&self, #an: #at) -> ::std::result::Result<(), ::ferry_rpc::RpcError> {
                        self.client.notify(&#module::#st, #enc)
                    }
                });
                async_client_fns.push(quote! {
                    #(#docs)*
                    pub async fn #fname(&self, #an: #at) -> ::std::result::Result<(), ::ferry_rpc::RpcError> {
                        self.client.notify(&#module::#st, #enc).await
                    }
                });
            }
            Kind::Push => {}
        }
    }

    // Pushes.
    let mut pusher_fns = Vec::new();
    let mut pushes_fns = Vec::new();
    let mut push_arms = Vec::new();
    for m in methods.iter().filter(|m| m.kind == Kind::Push) {
        let (id, st) = idents(m);
        let fname = &m.name;
        let an = &m.arg_name;
        let docs = &m.docs;
        let cat = client_arg_ty(m);
        let enc = arg_encoder(m, an);
        pusher_fns.push(quote! {
            #(#docs)*
            pub fn #fname(&self, #an: #cat) -> ::std::result::Result<(), ::ferry_rpc::RpcError> {
                ::ferry_rpc::push(&self.connection, &#module::#st, #enc)
            }
        });
        let hat = handler_arg_ty(m);
        pushes_fns.push(quote! {
            #(#docs)*
            fn #fname(&self, #an: #hat) { let _ = #an; }
        });
        let d = decode_then(m, quote!(body), quote!(p.#fname(__arg)), false);
        push_arms.push(quote! {
            #module::#id => {
                let r = #d;
                if let ::std::result::Result::Err(e) = r {
                    ::ferry_rpc::__private::push_undecodable(&#module::#st, e);
                }
            }
        });
    }

    let trait_doc = format!(
        "The blocking handlers of service `{service_str}` (serve them with [`{server_name}`])."
    );
    let async_doc = format!(
        "The async handlers of service `{service_str}` (serve them with [`{async_server}`])."
    );
    let span = Span::call_site();
    let unused = quote_spanned_allow(span);

    Ok(quote! {
        #[doc(hidden)]
        #[allow(non_snake_case, missing_docs)]
        #vis mod #module {
            pub const SERVICE: &str = #service_str;
            #(#consts)*
            const _: () = ::ferry_rpc::__private::assert_unique_ids(SERVICE, &[#(#id_list),*]);
        }

        #(#trait_docs)*
        #[doc = ""]
        #[doc = #trait_doc]
        #vis trait #name: ::std::marker::Send + ::std::marker::Sync + 'static {
            #(#sync_fns)*
        }

        #[doc = #async_doc]
        #vis trait #async_trait: ::std::marker::Send + ::std::marker::Sync + 'static {
            #(#async_fns)*
        }

        /// The blocking dispatcher: give it to `ferry_rpc::serve`.
        #vis struct #server_name<H>(::std::sync::Arc<H>);

        impl<H> ::std::fmt::Debug for #server_name<H> {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(::std::stringify!(#server_name))
            }
        }

        impl<H: #name> #server_name<H> {
            /// A dispatcher to `handler`.
            pub fn new(handler: H) -> Self { #server_name(::std::sync::Arc::new(handler)) }
        }

        impl<H: #name> ::ferry_rpc::Service for #server_name<H> {
            fn service_name(&self) -> &'static str { #module::SERVICE }
            #unused
            fn call(&self, call: ::ferry_rpc::Call<'_>) {
                let h = &*self.0;
                match call.method_id() {
                    #(#sync_call_arms)*
                    _ => call.unknown(),
                }
            }
            #unused
            fn notification(&self, note: ::ferry_rpc::Note<'_>) {
                let h = &*self.0;
                match note.method_id() {
                    #(#sync_note_arms)*
                    _ => note.unknown(),
                }
            }
        }

        /// The async dispatcher: give it to `ferry_rpc::serve_async`.
        #vis struct #async_server<H>(::std::sync::Arc<H>);

        impl<H> ::std::fmt::Debug for #async_server<H> {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(::std::stringify!(#async_server))
            }
        }

        impl<H: #async_trait> #async_server<H> {
            /// A dispatcher to `handler`.
            pub fn new(handler: H) -> Self { #async_server(::std::sync::Arc::new(handler)) }
        }

        impl<H: #async_trait> ::ferry_rpc::AsyncService for #async_server<H> {
            fn service_name(&self) -> &'static str { #module::SERVICE }
            fn call(self: ::std::sync::Arc<Self>, call: ::ferry_rpc::AsyncCall) -> ::ferry_rpc::BoxFuture {
                ::std::boxed::Box::pin(async move {
                    let h = &*self.0;
                    let _ = h;
                    match call.method_id() {
                        #(#async_call_arms)*
                        _ => call.unknown().await,
                    }
                })
            }
            fn notification(self: ::std::sync::Arc<Self>, note: ::ferry_rpc::OwnedNote) -> ::ferry_rpc::BoxFuture {
                ::std::boxed::Box::pin(async move {
                    let h = &*self.0;
                    let _ = h;
                    match note.method_id() {
                        #(#async_note_arms)*
                        _ => note.unknown(),
                    }
                })
            }
        }

        /// The typed blocking client: `Clone + Send + Sync`, one connection shared by all clones.
        #[derive(Clone, Debug)]
        #vis struct #client_name {
            client: ::ferry_rpc::Client,
            timeout: ::std::option::Option<::std::time::Duration>,
        }

        impl #client_name {
            /// Connects to the server of `name` with the default configuration.
            ///
            /// # Errors
            /// As `ferry_transport::Client::connect`.
            pub fn connect(name: &str) -> ::std::result::Result<Self, ::ferry_rpc::RpcError> {
                Self::connect_with(name, ::ferry_rpc::ClientConfig::default(), ::ferry_rpc::RpcConfig::default())
            }
            /// Connects with `config` and `rpc` settings.
            ///
            /// # Errors
            /// As `ferry_transport::Client::connect_with`.
            pub fn connect_with(name: &str, config: ::ferry_rpc::ClientConfig, rpc: ::ferry_rpc::RpcConfig) -> ::std::result::Result<Self, ::ferry_rpc::RpcError> {
                ::ferry_rpc::Client::connect(name, config, rpc, ::std::option::Option::None).map(Self::from_client)
            }
            /// Connects, handing the server's pushes to `pushes`.
            ///
            /// # Errors
            /// As `ferry_transport::Client::connect_with`.
            pub fn connect_with_pushes(name: &str, config: ::ferry_rpc::ClientConfig, rpc: ::ferry_rpc::RpcConfig, pushes: impl #pushes) -> ::std::result::Result<Self, ::ferry_rpc::RpcError> {
                ::ferry_rpc::Client::connect(name, config, rpc, ::std::option::Option::Some(#pushes::into_callback(pushes))).map(Self::from_client)
            }
            /// A typed client over an untyped one.
            pub fn from_client(client: ::ferry_rpc::Client) -> Self {
                #client_name { client, timeout: ::std::option::Option::None }
            }
            /// The untyped client underneath.
            pub fn client(&self) -> &::ferry_rpc::Client { &self.client }
            /// A client (same connection) whose calls carry a deadline `timeout` from when they
            /// start: the server's handler sees it, and the call fails with a timeout after it.
            pub fn with_timeout(&self, timeout: ::std::time::Duration) -> Self {
                #client_name { client: self.client.clone(), timeout: ::std::option::Option::Some(timeout) }
            }
            /// The async client over the same connection.
            pub fn to_async(&self) -> #async_client {
                #async_client { client: ::ferry_rpc::AsyncClient::from_blocking(&self.client), timeout: self.timeout }
            }
            #(#client_fns)*
        }

        /// The typed async client (tokio): `Clone + Send + Sync`, one connection shared by all
        /// clones; dropping a call's future or a stream cancels it on the server.
        #[derive(Clone, Debug)]
        #vis struct #async_client {
            client: ::ferry_rpc::AsyncClient,
            timeout: ::std::option::Option<::std::time::Duration>,
        }

        impl #async_client {
            /// Connects to the server of `name` with the default configuration.
            ///
            /// # Errors
            /// As `ferry_transport::tokio::AsyncClient::connect`.
            pub async fn connect(name: &str) -> ::std::result::Result<Self, ::ferry_rpc::RpcError> {
                Self::connect_with(name, ::ferry_rpc::ClientConfig::default(), ::ferry_rpc::RpcConfig::default()).await
            }
            /// Connects with `config` and `rpc` settings.
            ///
            /// # Errors
            /// As `ferry_transport::tokio::AsyncClient::connect_with`.
            pub async fn connect_with(name: &str, config: ::ferry_rpc::ClientConfig, rpc: ::ferry_rpc::RpcConfig) -> ::std::result::Result<Self, ::ferry_rpc::RpcError> {
                ::ferry_rpc::AsyncClient::connect(name, config, rpc, ::std::option::Option::None).await.map(|client| #async_client { client, timeout: ::std::option::Option::None })
            }
            /// Connects, handing the server's pushes to `pushes`.
            ///
            /// # Errors
            /// As `ferry_transport::tokio::AsyncClient::connect_with`.
            pub async fn connect_with_pushes(name: &str, config: ::ferry_rpc::ClientConfig, rpc: ::ferry_rpc::RpcConfig, pushes: impl #pushes) -> ::std::result::Result<Self, ::ferry_rpc::RpcError> {
                ::ferry_rpc::AsyncClient::connect(name, config, rpc, ::std::option::Option::Some(#pushes::into_callback(pushes))).await.map(|client| #async_client { client, timeout: ::std::option::Option::None })
            }
            /// A client (same connection) whose calls carry a deadline `timeout`.
            pub fn with_timeout(&self, timeout: ::std::time::Duration) -> Self {
                #async_client { client: self.client.clone(), timeout: ::std::option::Option::Some(timeout) }
            }
            #(#async_client_fns)*
        }

        /// Typed pushes to one client (server side): make one from `Context::connection()`.
        #[derive(Clone, Debug)]
        #vis struct #pusher {
            connection: ::ferry_rpc::Connection,
        }

        impl #pusher {
            /// Pushes to the client of `connection`.
            pub fn new(connection: ::ferry_rpc::Connection) -> Self { #pusher { connection } }
            #(#pusher_fns)*
        }

        /// The client's handlers of the server's pushes; each does nothing unless overridden.
        /// They run on whichever thread reads the connection: keep them short.
        #vis trait #pushes: ::std::marker::Send + ::std::marker::Sync + 'static {
            #(#pushes_fns)*
            /// The callback that decodes and routes pushes to these handlers.
            fn into_callback(self) -> ::ferry_rpc::PushCallback where Self: Sized {
                ::std::sync::Arc::new(move |bytes: &[u8]| {
                    let p = &self;
                    let _ = p;
                    let ::std::option::Option::Some((id, body)) = ::ferry_rpc::open_push(bytes) else { return };
                    let _ = body;
                    match id {
                        #(#push_arms)*
                        other => ::ferry_rpc::__private::push_unknown(#module::SERVICE, other),
                    }
                })
            }
        }
    })
}

fn quote_spanned_allow(_span: Span) -> Tokens {
    quote!(#[allow(unreachable_code, clippy::match_single_binding)])
}

/// Turns a trait into a typed service: see the `ferry-rpc` crate documentation.
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    let args = match syn::parse::<ServiceArgs>(attr) {
        Ok(a) => a,
        Err(e) => return e.to_compile_error().into(),
    };
    let item = match syn::parse::<ItemTrait>(item) {
        Ok(i) => i,
        Err(e) => return e.to_compile_error().into(),
    };
    match expand(args, item) {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}
