//! Display fields: the field whose value is the `name` in links to an entity type.

/// The conventional display field of well-known entity types (protocol doc, section 6).
pub fn default_display_field(entity_type: &str) -> Option<&'static str> {
    Some(match entity_type {
        "Task" => "content",
        "Reply" => "content",
        "Project" | "HumanUser" | "Department" | "Group" => "name",
        "Note" => "subject",
        "Ticket" => "title",
        "ApiUser" => "firstname",
        "EventLogEntry" => "description",
        "ActionMenuItem" => "title",
        "Attachment" => "this_file",
        t if t.starts_with("CustomEntity") || t.starts_with("CustomNonProjectEntity") => "code",
        "Shot" | "Asset" | "Sequence" | "Episode" | "Scene" | "Version" | "PublishedFile"
        | "Playlist" | "Cut" | "Step" | "TaskTemplate" | "Element" => "code",
        _ => return None,
    })
}
