//! A service's endpoint, resolved as the SDK resolves it: the inputs read from the shared
//! configuration once ([`EndpointInputs`]), and the service's own SDK resolver run on them
//! ([`json_client_for!`]), written once for every service the direct client calls.

use aws_types::service_config::ServiceConfigKey;

use super::SetupError;

/// What the endpoint resolver of a service needs from the shared configuration.
pub struct EndpointInputs {
    pub region: String,
    /// `AWS_ENDPOINT_URL_<SERVICE>`, `AWS_ENDPOINT_URL` or the profile's `endpoint_url`.
    pub configured: Option<String>,
    pub use_fips: Option<bool>,
    pub use_dual_stack: Option<bool>,
}

impl EndpointInputs {
    /// Reads them with the precedence the SDK's service configs apply: the service-specific
    /// setting, then the general one. `service_id` is the SDK's (`SQS`, `DynamoDB`).
    pub fn from_sdk(sdk: &aws_types::SdkConfig, service_id: &str) -> Result<Self, SetupError> {
        let region = sdk.region().ok_or(SetupError::NoRegion)?.to_string();
        let configured = sdk
            .service_config()
            .and_then(|c| {
                c.load_config(
                    ServiceConfigKey::builder()
                        .service_id(service_id)
                        .env("AWS_ENDPOINT_URL")
                        .profile("endpoint_url")
                        .build()
                        .expect("every field is set"),
                )
            })
            .or_else(|| sdk.endpoint_url().map(str::to_owned));
        Ok(Self {
            region,
            configured,
            use_fips: sdk.use_fips(),
            use_dual_stack: sdk.use_dual_stack(),
        })
    }
}

/// A [`super::JsonClient`] for one service, its endpoint resolved by the service's own SDK
/// resolver from the shared configuration (region, `AWS_ENDPOINT_URL(_<SERVICE>)`, FIPS,
/// dual-stack). A macro because each SDK crate has its own `Params` and `DefaultResolver` types
/// with the same builder; trailing `name(value)` pairs set a service's own parameters.
///
/// `json_client_for!(aws_sdk_sqs, "SQS", Service::Sqs, sdk, http)` evaluates to
/// `Result<JsonClient, SetupError>`.
macro_rules! json_client_for {
    ($krate:ident, $service_id:literal, $service:expr, $sdk:expr, $http:expr
     $(, $param:ident($value:expr))* $(,)?) => {{
        use $krate::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
        let sdk: &aws_types::SdkConfig = $sdk;
        match $crate::aws::direct::EndpointInputs::from_sdk(sdk, $service_id) {
            Err(e) => Err(e),
            Ok(inputs) => {
                let endpoint = async {
                    let params = Params::builder()
                        .region(inputs.region.clone())
                        .set_endpoint(inputs.configured.clone())
                        .set_use_fips(inputs.use_fips)
                        .set_use_dual_stack(inputs.use_dual_stack)
                        $(.$param($value))*
                        .build()
                        .map_err(|e| e.to_string())?;
                    DefaultResolver::new()
                        .resolve_endpoint(&params)
                        .await
                        .map_err(|e| e.to_string())
                }
                .await;
                $crate::aws::direct::JsonClient::new(sdk, $http, $service, inputs.region, endpoint)
            }
        }
    }};
}
pub(crate) use json_client_for;
