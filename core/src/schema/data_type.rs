//! API3 data types and how the cache stores each.

/// A field's `data_type` as the site names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DataType {
    Text,
    Number,
    Float,
    Currency,
    Percent,
    Duration,
    Timecode,
    Footage,
    Checkbox,
    Date,
    DateTime,
    List,
    StatusList,
    Color,
    EntityType,
    Uuid,
    Serializable,
    Password,
    Entity,
    MultiEntity,
    Addressing,
    TagList,
    Image,
    Url,
    UrlTemplate,
    PivotColumn,
    Summary,
    Calculated,
    SystemTaskType,
    /// A type this version does not know; never stored.
    Other(String),
}

/// How the cache keeps a field's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// Text, list, status, color, entity type, uuid, footage.
    Text,
    /// Integers: number, percent, duration (minutes), timecode (ms).
    Integer,
    /// Floating point: float, currency.
    Float,
    /// Checkbox: NOT NULL, default false.
    Boolean,
    /// Calendar date, no time zone.
    Date,
    /// Instant, UTC.
    DateTime,
    /// JSON document: serializable, url, tag lists, image URLs.
    Json,
    /// `{field}__type` + `{field}__id`.
    EntityLink,
    /// Association table `{entity_type}_{field}`, keeping link order.
    MultiEntity,
    /// Not stored: server-computed, write-only or unknown. Requests touching it pass through.
    Uncacheable(&'static str),
}

impl DataType {
    pub fn from_api(name: &str) -> DataType {
        use DataType::*;
        match name {
            "text" => Text,
            "number" => Number,
            "float" => Float,
            "currency" => Currency,
            "percent" => Percent,
            "duration" => Duration,
            "timecode" => Timecode,
            "footage" => Footage,
            "checkbox" => Checkbox,
            "date" => Date,
            "date_time" => DateTime,
            "list" => List,
            "status_list" => StatusList,
            "color" => Color,
            "entity_type" => EntityType,
            "uuid" => Uuid,
            "serializable" => Serializable,
            "password" => Password,
            "entity" => Entity,
            "multi_entity" => MultiEntity,
            "addressing" => Addressing,
            "tag_list" => TagList,
            "image" => Image,
            "url" => Url,
            "url_template" => UrlTemplate,
            "pivot_column" => PivotColumn,
            "summary" => Summary,
            "calculated" => Calculated,
            "system_task_type" => SystemTaskType,
            other => Other(other.to_string()),
        }
    }

    pub fn api_name(&self) -> &str {
        use DataType::*;
        match self {
            Text => "text",
            Number => "number",
            Float => "float",
            Currency => "currency",
            Percent => "percent",
            Duration => "duration",
            Timecode => "timecode",
            Footage => "footage",
            Checkbox => "checkbox",
            Date => "date",
            DateTime => "date_time",
            List => "list",
            StatusList => "status_list",
            Color => "color",
            EntityType => "entity_type",
            Uuid => "uuid",
            Serializable => "serializable",
            Password => "password",
            Entity => "entity",
            MultiEntity => "multi_entity",
            Addressing => "addressing",
            TagList => "tag_list",
            Image => "image",
            Url => "url",
            UrlTemplate => "url_template",
            PivotColumn => "pivot_column",
            Summary => "summary",
            Calculated => "calculated",
            SystemTaskType => "system_task_type",
            Other(s) => s,
        }
    }

    /// How the cache stores values of this type. Anything the cache cannot reproduce exactly
    /// is `Uncacheable` and passed through, never stored lossily.
    pub fn storage(&self) -> Storage {
        use DataType::*;
        match self {
            Text | Footage | List | StatusList | Color | EntityType | Uuid | SystemTaskType => {
                Storage::Text
            }
            Number | Percent | Duration | Timecode => Storage::Integer,
            Float | Currency => Storage::Float,
            Checkbox => Storage::Boolean,
            Date => Storage::Date,
            DateTime => Storage::DateTime,
            Serializable | Url | TagList => Storage::Json,
            Entity => Storage::EntityLink,
            MultiEntity | Addressing => Storage::MultiEntity,
            Image => Storage::Uncacheable("image URLs are signed and expire"),
            Password => Storage::Uncacheable("password values are never returned"),
            UrlTemplate | PivotColumn | Summary | Calculated => {
                Storage::Uncacheable("computed by the site")
            }
            Other(_) => Storage::Uncacheable("unknown data type"),
        }
    }
}
