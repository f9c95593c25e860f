//! gRPC `LogSettings` (Triton's logging extension): a request with settings changes them (with the admin token
//! when the server has one), one without only reads them; either answers every setting in force.
use crate::admin::{Admin, Caller};
use crate::error::InferResult;
use crate::logging::{control, LogUpdate, SettingValue};
use crate::proto::log_settings_request::setting_value::ParameterChoice as In;
use crate::proto::log_settings_response::setting_value::ParameterChoice as Out;
use crate::proto::{log_settings_response, LogSettingsRequest, LogSettingsResponse};

pub fn log_settings(admin: &Admin, caller: &Caller<'_>, req: LogSettingsRequest) -> InferResult<LogSettingsResponse> {
    let control = control()?;
    let settings = if req.settings.is_empty() {
        control.settings()
    } else {
        admin.authorize_settings(caller, "LogSettings")?;
        let update = LogUpdate::parse(req.settings.into_iter().map(|(name, v)| {
            let value = match v.parameter_choice {
                Some(In::BoolParam(b)) => SettingValue::Bool(b),
                Some(In::Uint32Param(n)) => SettingValue::Uint(n),
                Some(In::StringParam(s)) => SettingValue::String(s),
                None => SettingValue::Other("no value"),
            };
            (name, value)
        }))?;
        control.update(&update)
    };
    let settings = settings
        .entries()
        .into_iter()
        .filter_map(|(name, value)| {
            let choice = match value {
                SettingValue::Bool(b) => Out::BoolParam(b),
                SettingValue::Uint(n) => Out::Uint32Param(n),
                SettingValue::String(s) => Out::StringParam(s),
                SettingValue::Other(_) => return None,
            };
            Some((
                name.to_string(),
                log_settings_response::SettingValue {
                    parameter_choice: Some(choice),
                },
            ))
        })
        .collect();
    Ok(LogSettingsResponse { settings })
}
