with source as (
    select * from {{ source('edxorg_s3', 'raw__edxorg__s3__tables__auth_user') }}
)

{{ deduplicate_raw_table(partition_columns='id') }}
, cleaned as (
    -- The raw layer is all strings; ids exceed int32 (obfuscated exports), hence bigint.
    select
        cast(id as bigint) as user_id
        , username as user_username
        , email as user_email
        , cast(is_active as boolean) as user_is_active
        , cast(is_staff as boolean) as user_is_staff
        , cast(is_superuser as boolean) as user_is_superuser
        , cast(date_joined as timestamp) as user_joined_on
        , cast(last_login as timestamp) as user_last_login
        , extracted_course_key as user_seen_in_course_key
    from most_recent_source
)

select * from cleaned
